"""`qspace demo`: a synthetic SVIT-like dataset, tiny models trained here, scored through the real queue, served.

One command, no GPU, no servers, no model download:

1. writes a synthetic SVIT-like dataset with rendered images and labelled defects under the data directory
   (:mod:`qspace.demo.data`, with ``qspace.synthetic.make_svit_like``; cached);
2. trains the tiny CLIP and LLaVA on a separate synthetic corpus that it writes for them
   (:mod:`qspace.demo.models`, training in ``workers.demo_train``; cached, so a second run starts at once);
3. ingests the dataset (task types from the file names, their generation prompts from
   ``task_type_prompts.json``), unless it is there already (:mod:`qspace.demo.ingest`);
4. starts the API with an embedded Celery worker (:mod:`qspace.demo.serving`) and posts a ``clip`` and an
   ``mllm_loss`` run through the REST API, following their progress in the terminal (:mod:`qspace.demo.runs`; runs
   already done are not scored again);
5. serves the app at http://127.0.0.1:PORT with the explore page on the demo dataset, or, with ``--no-serve``,
   stops there (:mod:`qspace.demo.run`).

It ends by printing how well the scores find the injected defects (:mod:`qspace.demo.figures`). torch loads only
in step 2, inside :func:`~qspace.demo.models.ensure_models`; :mod:`qspace.demo.evaluate` measures the models
outside the demo.
"""

from qspace.demo.figures import auc, quality_figures, stored_figures, summary
from qspace.demo.ingest import dataset_name
from qspace.demo.messages import DemoError
from qspace.demo.run import DEFAULT_SIZE, DemoResult, run_demo

__all__ = [
    "DEFAULT_SIZE",
    "DemoError",
    "DemoResult",
    "auc",
    "dataset_name",
    "quality_figures",
    "run_demo",
    "stored_figures",
    "summary",
]
