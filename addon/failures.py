"""Every failure the panel can show, as ONE table: code -> (title, one-line cause, the actions that fix it).

No bpy: plain-pytest testable. The panel draws a fix-it box from `problem_for()`; the codes are the backend's
job error codes (`client.protocol.ERROR_CODES`, a test checks every one is here), the launcher's diagnoses
(`launcher.diagnose`, `launcher.missing_packages`) and the link's states. An action is an operator with its
properties; the first one is the main fix. `field` names the panel field at fault; the panel highlights it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    operator: str  # e.g. "distillery.fix"
    button: str  # the button's text
    props: tuple[tuple[str, object], ...] = ()  # operator properties, e.g. (("action", "NEW_SEED"),)


@dataclass(frozen=True)
class Fix:
    title: str  # the box's heading
    cause: str  # one line, used when the failure carries no message of its own
    actions: tuple[Action, ...]


@dataclass
class Problem:
    """One fix-it box: what the panel draws."""

    code: str
    title: str
    cause: str  # one line
    actions: list[Action]
    hint: str = ""  # a second line when the backend sent one (e.g. the exact download command)
    field: str = ""  # the panel field to highlight ("" when none)
    icon: str = "ERROR"


RESTART = Action("distillery.backend_restart", "Restart Backend")
START = Action("distillery.backend_start", "Start Backend")
SHOW_LOG = Action("distillery.show_log", "Open Log")
PREFERENCES = Action("distillery.open_preferences", "Pick Another Interpreter")
INSTALL = Action("distillery.venv_install", "Install Backend", (("use_managed", True),))
DISMISS = Action("distillery.fix", "Dismiss", (("action", "CLEAR"),))
RETRY = Action("distillery.fix", "Retry", (("action", "RETRY"),))

FIXES: dict[str, Fix] = {
    # -- job error codes (protocol.ERROR_CODES) -------------------------------------------------------------
    "INVALID_CONFIG": Fix("Invalid setting", "a setting is out of its allowed range",
                          (Action("distillery.fix", "Reset This Setting", (("action", "RESET_FIELD"),)),)),
    "UNKNOWN_PROMPT": Fix("Prompt not known to this prior", "the prior does not know this prompt",
                          (Action("distillery.fix", "Edit the Prompt", (("action", "CLEAR"),)),)),
    "MODEL_MISSING": Fix("Model missing", "the model's weights are not in the local cache",
                         (Action("distillery.download_model", "Download Model"),
                          Action("distillery.open_preferences", "Model Cache Settings"))),
    "CUDA_OOM": Fix("Out of GPU memory", "the GPU ran out of memory",
                    (Action("distillery.fix", "Lower Resolution and Retry", (("action", "LOWER_RESOLUTION"),)),)),
    "DIVERGED": Fix("The optimisation diverged", "the losses stopped being finite",
                    (Action("distillery.fix", "Retry with a New Seed", (("action", "NEW_SEED"),)),)),
    "CANCELLED": Fix("Cancelled", "the job was cancelled", (DISMISS,)),
    "WORKER_CRASHED": Fix("The backend worker crashed", "the backend's worker process died",
                          (RESTART, SHOW_LOG)),
    "INTERNAL": Fix("Job failed", "the backend hit an internal error", (SHOW_LOG, RETRY)),
    # -- fields the panel checks before sending (request.RequestError.field) --------------------------------
    "EMPTY_PROMPT": Fix("Prompt is empty", "type what to generate, e.g. 'a blue mug'", (DISMISS,)),
    "NO_CAMERA": Fix("No active camera", "'Front from camera' needs an active camera in the scene",
                     (Action("distillery.fix", "Use the Cursor's Front", (("action", "NO_CAMERA_FRONT"),)),)),
    "BAD_SEED_SHAPE": Fix("Seed shape unusable", "the seed shape has no faces to sample points from",
                          (Action("distillery.fix", "Clear the Seed Shape", (("action", "CLEAR_SEED"),)),)),
    "PRESETS_NOT_LOADED": Fix("Presets not loaded", "start the backend to load its presets", (START,)),
    # -- the backend process and the link (launcher.py, link.py) --------------------------------------------
    "BACKEND_NOT_RUNNING": Fix("Backend not running", "start it to generate", (START,)),
    "BACKEND_NO_INTERPRETER": Fix("Backend not installed", "no Python interpreter for the backend is set",
                                  (INSTALL, PREFERENCES)),
    "BACKEND_MISSING_PACKAGE": Fix("Backend packages missing", "the backend's Python lacks a package",
                                   (INSTALL, PREFERENCES, SHOW_LOG)),
    "BACKEND_INCOMPLETE": Fix("Backend install incomplete", "the managed environment lacks packages",
                              (Action("distillery.venv_install", "Install Backend"), SHOW_LOG)),
    "BACKEND_NOT_INSTALLED": Fix("Backend not installed", "install its packages into the managed environment",
                                 (Action("distillery.venv_install", "Install Backend"), PREFERENCES)),
    "BACKEND_EXITED": Fix("Backend stopped", "the backend exited", (SHOW_LOG, RESTART)),
    "BACKEND_START_TIMEOUT": Fix("Backend did not start", "the backend did not answer in time",
                                 (SHOW_LOG, RESTART)),
    "BACKEND_UNRESPONSIVE": Fix("Backend not responding", "the backend stopped answering", (RESTART, SHOW_LOG)),
    "BACKEND_UNREACHABLE": Fix("Cannot reach the backend", "nothing answers at the backend's URL",
                               (Action("distillery.open_preferences", "Backend Preferences"), RETRY)),
    "PROTOCOL_MISMATCH": Fix("Backend version differs", "the backend speaks another protocol version", (RESTART,)),
    "SUBMIT_FAILED": Fix("Could not send the job", "the backend did not accept the job", (RETRY, SHOW_LOG)),
}

# Panel field (request.RequestError.field) -> the code of its fix-it box.
FIELD_CODES = {"prompt": "EMPTY_PROMPT", "front from camera": "NO_CAMERA", "seed shape": "BAD_SEED_SHAPE",
               "seed object": "BAD_SEED_SHAPE", "preset": "PRESETS_NOT_LOADED"}


def one_line(text: str, limit: int = 160) -> str:
    """The first line of `text`, trimmed to `limit` characters: a cause is one line."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def problem_for(code: str, message: str = "", hint: str = "", field: str = "") -> Problem:
    """The fix-it box of a failure: its title and actions from FIXES (an unknown code gets "Job failed" with
    Retry), the cause in one line (the failure's own message, else the table's)."""
    fix = FIXES.get(code) or Fix("Job failed", "the job failed", (RETRY, SHOW_LOG))
    return Problem(code, fix.title, one_line(message) or fix.cause, list(fix.actions), one_line(hint), field)


def model_name_from_hint(hint: str) -> str:
    """The model a MODEL_MISSING hint names: "... distillery models download sd21 ..." -> "sd21" ("" if none)."""
    m = re.search(r"models download\s+([A-Za-z0-9_.:/-]+)", hint or "")
    return m.group(1) if m else ""
