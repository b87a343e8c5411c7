"""The demo's two tiny models, piece by piece: the recipe, the corpus, the CLIP and the LLaVA.
:mod:`workers.demo_train` trains them together and caches them."""
