"""Every component id of the UI, in one place (pages import from here; tests and the bench too).

assets/qspace.js names a few of them literally (explore-region, explore-graph, detail-id, the preset and
grid button types): keep the two in step.
"""

from __future__ import annotations

# --- app shell -------------------------------------------------------------------------------------
URL = "url"
PAGE = "page"
DATASET = "dataset-select"  # the dataset picker in the header
DATASET_STORE = "dataset-store"  # {"id": int} of the chosen dataset, kept in the browser session
TOKEN = "api-token"  # the bearer token input (shown only when the server needs one)
TOKEN_STORE = "api-token-store"  # the token, in the browser session only (sessionStorage; assets/token.js reads it)
SHELL_ALERT = "shell-alert"
NAV = "nav"
SAVED_STORE = "saved-selections-store"  # ids of selections saved in this browser session

# --- datasets page ---------------------------------------------------------------------------------
DS_TABLE = "ds-table"
DS_ALERT = "ds-alert"
INGEST_NAME = "ingest-name"
INGEST_PATHS = "ingest-paths"
INGEST_IMAGE_ROOT = "ingest-image-root"
INGEST_TASK_FIELD = "ingest-task-field"
INGEST_PROMPTS = "ingest-prompts"
INGEST_DEDUPE = "ingest-dedupe"
INGEST_SUBMIT = "ingest-submit"
INGEST_RESULT = "ingest-result"
INGEST_JOB = "ingest-job"  # the ingest job the form follows (POST /api/datasets answers 202 with it)
INGEST_POLL = "ingest-poll"
INGEST_CANCEL = "ingest-cancel"  # pattern-matching: {"type": INGEST_CANCEL, "job": id}
RUN_KIND = "run-kind"
RUN_PARAMS = "run-params"  # container of the generated parameter inputs
RUN_PARAM = "run-param"  # pattern-matching type of one parameter input: {"type": RUN_PARAM, "name": ...}
RUN_SUBMIT = "run-submit"
RUN_RESULT = "run-result"
RUNS_TABLE = "runs-table"
RUNS_POLL = "runs-poll"
RUN_CANCEL = "run-cancel"  # pattern-matching: {"type": RUN_CANCEL, "run": id}
RUNS_ALERT = "runs-alert"
JOBS_TABLE = "jobs-table"  # the dataset's background jobs (e.g. the demo's model training), above its runs
JOB_CANCEL = "job-cancel"  # pattern-matching: {"type": JOB_CANCEL, "job": id}
SCORERS_STORE = "scorers-store"

# --- explore page ----------------------------------------------------------------------------------
EX_X = "explore-x"
EX_Y = "explore-y"
EX_X_SCALE = "explore-x-scale"  # the x axis's transform: "" (linear), log, type_z, type_rank (AXIS@...)
EX_Y_SCALE = "explore-y-scale"
EX_COLOR = "explore-color"
EX_META_VALUES = "explore-meta-values"  # kept values of a metadata colour (a filter)
EX_META_WRAP = "explore-meta-wrap"
EX_TASKS = "explore-task-types"
EX_CONTOURS = "explore-contours"
EX_GRAPH = "explore-graph"
EX_PLOT_INFO = "explore-plot-info"
EX_ALERT = "explore-alert"
EX_REGION = "explore-region"  # {region, label, source} of the current region; a drawn polygon arrives simplified
EX_TOP_PERCENT = "explore-top-percent"
EX_PRESET = "explore-preset"  # pattern-matching: {"type": EX_PRESET, "key": "dis" | "dil" | "diq" | "all"}
EX_GRID = "explore-grid"  # pattern-matching: {"type": EX_GRID, "i": i, "j": j}
EX_CLEAR = "explore-clear"
EX_SETUP = "explore-setup"  # the explore page's small store: axes, labels, task types, prompts
EX_VIEW = "explore-view"  # {key: "ds|x|y", x_range, y_range}: the zoomed view of a plane above the point budget
EX_META = "explore-meta-fields"  # categorical metadata fields and their values, loaded after the page
EX_BODY = "explore-body"  # the waiting state's container: the plane page replaces it when the scores are in
EX_WAIT_STATUS = "explore-wait-status"  # "still computing: training the demo models 40% · clip run #3 queued"
EX_WAIT_POLL = "explore-wait-poll"  # the waiting state's interval (gone with it once the plane is drawn)
EX_WAIT_DS = "explore-wait-ds"
EX_WAIT_SHOW = "explore-wait-show"  # "show what is scored so far" (when the axes resolve already)
# the data map beside the plane (explore/map_view.py) and saved selections compared on it (explore/compare.py);
# assets/overlay.js names explore-map, explore-region and detail-id literally
EX_MAP = "explore-map"  # the data map (a projection run's map_x, map_y)
EX_MAP_SHOW = "explore-map-show"  # the "show data map" toggle
EX_MAP_TOGGLE = "explore-map-toggle"  # the toggle's wrapper (hidden without a finished projection run)
EX_MAP_WRAP = "explore-map-wrap"
EX_MAP_INFO = "explore-map-info"
EX_MAP_AXES = "explore-map-axes"  # {"x": "RUN:map_x", "y": "RUN:map_y", "run": RUN} of the newest projection
EX_VIEWS = "explore-views"  # the row holding the plane and, when shown, the map
EX_LINK = "explore-link"  # overlay traces of the current selection on both views, when the map is shown
EX_OVERLAY_ACK = "explore-overlay-ack"
CMP_PICK = "compare-pick"  # multi-select of 2-3 saved selections
CMP_OVERLAY = "compare-overlay"  # their outline traces on both views
CMP_TABLE = "compare-table"
CMP_INFO = "compare-info"

SEL_TITLE = "sel-title"
SEL_COUNT = "sel-count"
SEL_SHARES = "sel-shares"
SEL_SUMMARY = "sel-summary"
SEL_RECIPE = "sel-recipe"  # the request body of the current selection (small)
SEL_NAME = "sel-name"
SEL_SAVE = "sel-save"
SEL_RANDOM = "sel-random"
SEL_SEED = "sel-seed"
SEL_SAVED = "sel-saved"  # the saved selections of this view, with their download links
SEL_ALERT = "sel-alert"
SEL_STATUS = "sel-status"

GALLERY = "gallery"
GALLERY_PAGE = "gallery-page"
GALLERY_PREV = "gallery-prev"
GALLERY_NEXT = "gallery-next"
GALLERY_INFO = "gallery-info"
GALLERY_CARD = "gallery-card"  # pattern-matching: {"type": GALLERY_CARD, "id": sample id}
DETAIL = "detail"
DETAIL_BODY = "detail-body"
DETAIL_CLOSE = "detail-close"
DETAIL_ID = "detail-id"
DETAIL_NEIGHBOURS = "detail-neighbours"  # the sample's nearest neighbours (a clip run with kept embeddings)
NEIGHBOUR_CARD = "neighbour-card"  # pattern-matching: {"type": NEIGHBOUR_CARD, "id": sample id}
SEARCH_TEXT = "search-text"  # "find samples like…": a text search over kept CLIP embeddings
SEARCH_GO = "search-go"
SEARCH_CLEAR = "search-clear"
SEARCH_INFO = "search-info"
SEARCH_RESULTS = "search-results"
SEARCH_CARD = "search-card"  # pattern-matching: {"type": SEARCH_CARD, "id": sample id}
SEARCH_PANEL = "search-panel"
SEARCH_HITS = "search-hits"  # {ids, text} of the last search
SEARCH_OVERLAY = "search-overlay"  # the results' markers over the plane
SEARCH_ACK = "search-overlay-ack"

# --- curriculum page -------------------------------------------------------------------------------
CU_X = "cur-x"
CU_Y = "cur-y"
CU_STAGES = "cur-stages"
CU_X_MIN = "cur-x-min"
CU_Y_MIN = "cur-y-min"
CU_DX = "cur-dx"
CU_DY = "cur-dy"
CU_PER_STAGE = "cur-per-stage"
CU_SEED = "cur-seed"
CU_NAME = "cur-name"
CU_GRAPH = "cur-graph"
CU_SIZES = "cur-sizes"
CU_BUILD = "cur-build"
CU_RESULT = "cur-result"
CU_ALERT = "cur-alert"
CU_SELECTIONS = "cur-selections"
CU_BUILD_SEL = "cur-build-selections"
CU_SETUP = "cur-setup"

# --- experiments: the launch form (explore and curriculum) and the experiments page -----------------
CURRICULA_STORE = "curricula-store"  # ids of curricula built in this browser session (no list route)
XP_OPEN_SELECTION = "xp-open-selection"  # "Train & compare with random" on explore's selection panel
XP_OPEN_CURRICULUM = "xp-open-curriculum"  # the same on the curriculum page
XP_DIALOG = "xp-dialog"  # the launch form, over the page
XP_FORM_DS = "xp-form-ds"  # {"ds": id, "current": {recipe, name} | None}: the form's dataset, the unsaved arm
XP_FORM_ARMS = "xp-form-arms"  # multi-select: "sel:ID", "cur:ID", "current" (the unsaved selection)
XP_FORM_BASE = "xp-form-base"
XP_FORM_SEEDS = "xp-form-seeds"
XP_FORM_SUITES = "xp-form-suites"
XP_FORM_PRESET = "xp-form-preset"
XP_FORM_NAME = "xp-form-name"
XP_FORM_START = "xp-form-start"
XP_FORM_CLOSE = "xp-form-close"
XP_FORM_STATUS = "xp-form-status"

XP_SETUP = "xp-setup"  # {"ds": id, "exp": id | None}
XP_LIST = "xp-list"
XP_HEAD = "xp-head"  # the open experiment's name, status, downloads and cancel
XP_CANCEL = "xp-cancel"
XP_JOBS = "xp-jobs"
XP_LOSS_GRAPH = "xp-loss-graph"
XP_LOSS = "xp-loss"  # {job id: [[step, loss], ...]} seen by this page (the API keeps only the latest loss)
XP_RESULTS = "xp-results"
XP_RESULTS_KEY = "xp-results-key"  # which done jobs the drawn results cover (redrawn only when that changes)
XP_POLL = "xp-poll"  # live progress; disabled when nothing is queued or running
XP_ALERT = "xp-alert"
