"""`qspace demo`: a synthetic SVIT-like dataset, tiny models trained here, scored through the real queue, served.

One command, no GPU, no servers, no model download:

1. writes a synthetic SVIT-like dataset with rendered images and labelled defects under the data directory
   (:mod:`qspace.demo.data`, with ``qspace.synthetic.make_svit_like``; cached);
2. ingests it (task types from the file names, their generation prompts from ``task_type_prompts.json``), unless
   it is there already (:mod:`qspace.demo.ingest`);
3. serves the app at http://127.0.0.1:PORT with the explore page on the demo dataset, with an embedded Celery
   worker (:mod:`qspace.demo.serving`): it answers from here on, while the rest goes on in the background;
4. trains the tiny CLIP and LLaVA on a separate synthetic corpus that it writes for them, in a child process
   under a ``demo_models`` background job that the Datasets page, the explore page and the terminal show
   (:mod:`qspace.demo.background`, :mod:`qspace.demo.trainer`, :mod:`qspace.demo.models`; training in
   ``workers.demo_train``; cached, so a second run starts at once);
5. posts a ``clip`` and an ``mllm_loss`` run through the REST API and follows their progress in the terminal
   (:mod:`qspace.demo.runs`; runs already done are not scored again); the explore page draws the scored plane
   by itself when they finish.

With ``--no-serve`` the steps run in the order data, models (trained in this process), ingest, scoring, and it
stops there (:mod:`qspace.demo.run`). It ends by printing how well the scores find the injected defects
(:mod:`qspace.demo.figures`). torch loads only when the models are looked up; :mod:`qspace.demo.evaluate`
measures the models outside the demo.
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
