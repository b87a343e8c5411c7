"""Derived runs' maths on kept embeddings (numpy, faiss, scikit-learn, umap-learn; no torch): projection,
clusters, duplicates. The Celery task that reads and writes them is ``workers/derived_tasks.py``."""
