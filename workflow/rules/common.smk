# Config validation and paths shared by all rules.
import json
import os
import shlex
import sys
import uuid
from pathlib import Path

from snakemake.utils import validate

from l2lflow.config import ConfigError, check_resources, validate_config
from l2lflow.store import StoreError, check_compatible

from l2lflow.workflow import experiment_config

try:
    # --configfile FILE (else config/config.yaml), with a site profile's execution settings
    _raw = experiment_config(config, Path(workflow.basedir) / "config" / "config.yaml", sys.argv)
    # l2lflow's checks first: their messages name the key and what is allowed ...
    CONFIG = validate_config(_raw)
    # ... then Snakemake's own validator on the same schema
    validate(dict(_raw), workflow.source_path("../schemas/config.schema.yaml"))
    check_compatible(CONFIG["results"], CONFIG)
    check_resources(CONFIG)
except (ConfigError, StoreError) as exc:
    raise WorkflowError(f"l2lflow: {exc}") from None

RESULTS = CONFIG["results"]
GENERATIONS = int(CONFIG["generations"])
STEPS = f"{RESULTS}/steps"
# the resolved config the engine reads; rewritten only when it changed, so that its mtime (and
# thereby Snakemake's view of the finished generations) is untouched by a plain rerun
CONFIG_JSON = f"{RESULTS}/config.json"
_text = json.dumps(CONFIG, indent=1)  # key order kept: it orders the parameters
if not os.path.exists(CONFIG_JSON) or Path(CONFIG_JSON).read_text() != _text:
    os.makedirs(RESULTS, exist_ok=True)
    Path(CONFIG_JSON).write_text(_text)

# the engine serves one run at a time: every step of this Snakemake run carries its id, and the
# pid of this Snakemake process, which the engine watches: it stops within a second of its death
if "L2LFLOW_RUN_ID" not in os.environ:
    os.environ["L2LFLOW_RUN_ID"] = uuid.uuid4().hex
    os.environ["L2LFLOW_RUN_PID"] = str(os.getpid())
# call the interpreter that runs Snakemake directly (no console-script or pyenv shim per job)
L2LFLOW = f"{shlex.quote(sys.executable)} -m l2lflow"
STEP = f"{L2LFLOW} step {{rule}} --results {shlex.quote(RESULTS)} --config {shlex.quote(CONFIG_JSON)}"


def step_file(generation, step):
    return f"{STEPS}/{int(generation):06d}.{step}"


FINAL_TARGETS = [step_file(GENERATIONS - 1, "aggregated")]
if CONFIG["optimizee"].get("meta_test") is not None:
    FINAL_TARGETS.append(f"{STEPS}/meta_test.after_{GENERATIONS - 1:06d}")


# before the first job: refuse if another run uses the results (Snakemake would delete that run's
# step files before its own steps were refused), and start the engine and its worker pools, which
# then start while Snakemake runs the first steps
onstart:
    shell(f"{L2LFLOW} step claim --results {shlex.quote(RESULTS)} --config {shlex.quote(CONFIG_JSON)}")


onsuccess:
    shell(f"{L2LFLOW} step shutdown --results {shlex.quote(RESULTS)}")


onerror:
    shell(f"{L2LFLOW} step shutdown --results {shlex.quote(RESULTS)}")
