"""The panels' and preferences' draw() code, run against a recording layout in every state the panel has
(module mode has no UI to draw into): every property it shows exists, every button names a real operator with
real properties, and the progress bar, fix-it boxes and settings appear when they should."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from conftest import PKG, prefs


class OpProps:
    def __init__(self, idname: str) -> None:
        mod, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, mod), name).get_rna_type()
        object.__setattr__(self, "_names", {p.identifier for p in rna.properties})
        object.__setattr__(self, "idname", idname)

    def __setattr__(self, key, value):
        assert key in self._names, f"{self.idname} has no property {key}"


class Layout:
    """Records what draw() asks for and checks it against the RNA."""

    alert = False  # draw() sets it on a row or column to highlight the field at fault

    def __init__(self, log: list) -> None:
        self.log = log

    def _child(self, *a, **k):
        child = Layout(self.log)
        child.alert = self.alert  # as in Blender: a sub-layout inherits its parent's alert state
        return child

    row = column = box = split = column_flow = grid_flow = _child

    def label(self, text="", icon="NONE", **k):
        self.log.append(("label", text))

    def separator(self, **k):
        pass

    def prop(self, data, attr, **k):
        if type(data).__name__ == "Stub":
            data = prefs(None)
        if attr.startswith('["'):
            assert attr[2:-2] in data, attr
        else:
            assert attr in data.bl_rna.properties, f"{type(data).__name__} has no property {attr}"
        self.log.append(("prop", attr))
        if self.alert:
            self.log.append(("alert", attr))

    def operator(self, idname, **k):
        props = OpProps(idname)
        self.log.append(("operator", idname))
        return props

    def progress(self, text="", factor=0.0, type="BAR"):
        assert 0.0 <= factor <= 1.0
        self.log.append(("progress", text))

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, **k):
        assert hasattr(bpy.types, list_type) and prop in data.bl_rna.properties
        self.log.append(("list", prop))


def _stub(cls, log: list, values: dict | None = None):
    """An instance-like object with the class's methods, a recording layout and the given attributes."""
    members = {k: v for k, v in vars(cls).items() if not k.startswith("__")}
    return type("Stub", (), {**members, **(values or {}), "layout": Layout(log)})()


def draw(panel_cls, context=None) -> list:
    log: list = []
    panel_cls.draw(_stub(panel_cls, log), context or bpy.context)
    return log


def draw_prefs() -> list:
    log: list = []
    p = prefs(None)
    names = [prop.identifier for prop in p.bl_rna.properties if prop.identifier not in ("rna_type", "bl_idname")]
    values = {k: getattr(p, k) for k in names}
    p.__class__.draw(_stub(p.__class__, log, values), bpy.context)  # prop() checks the real preferences' RNA
    return log


def test_panels_in_every_state(addon, presets_payload):
    panels = addon.panels
    rt = addon.runtime.RUNTIME
    s = bpy.context.scene.distillery
    addon.properties.sync_presets([])  # as before the first connection (other tests may have loaded them)
    # no backend yet: a fix-it box, no settings
    log = draw(panels.DISTILLERY_PT_main)
    assert ("operator", "distillery.generate") in log
    assert any(e[0] == "label" and "Backend" in e[1] for e in log)
    assert ("label", "Start the backend to see the preset's settings") in draw(panels.DISTILLERY_PT_settings)
    # backend alive with presets: every setting of the preset is drawn, advanced ones on request
    rt.view.state, rt.view.health = "alive", {"version": "0.1.0", "protocol_version": 1, "devices": ["cpu"],
                                              "renderers": ["torch"], "queue_length": 2, "worker": "ready"}
    addon.properties.sync_presets(presets_payload)
    s.preset = presets_payload[0]["name"]
    s.show_advanced = False
    basic = [e for e in draw(panels.DISTILLERY_PT_settings) if e[0] == "prop"]
    s.show_advanced = True
    full = [e for e in draw(panels.DISTILLERY_PT_settings) if e[0] == "prop"]
    n_settings = len(addon.request.editable_settings(presets_payload[0]))
    assert len(basic) < len(full) == n_settings + 1  # + the Advanced toggle
    log = draw(panels.DISTILLERY_PT_main)
    assert ("label", "Backend ready (2 queued)") in log
    # a running job: progress bar with step and ETA, Cancel instead of Generate
    s.job_id, s.job_state, s.job_step, s.job_steps, s.job_progress, s.job_eta = "a" * 32, "running", 50, 200, .25, 75
    log = draw(panels.DISTILLERY_PT_main)
    assert ("progress", "Step 50/200  ETA 1:15") in log and ("operator", "distillery.cancel") in log
    assert ("operator", "distillery.generate") not in log
    # a failed job: its fix-it box with the fixing button
    s.job_state, s.job_error_code, s.job_error_message = "failed", "CUDA_OOM", "out of memory"
    log = draw(panels.DISTILLERY_PT_main)
    assert ("label", "Out of GPU memory") in log and ("operator", "distillery.fix") in log
    # history with an entry, and the display panel of a Gaussian object
    item = s.history.add()
    item.job_id, item.prompt, item.state = "b" * 32, "a duck", "succeeded"
    log = draw(panels.DISTILLERY_PT_history)
    assert ("list", "history") in log and ("operator", "distillery.history") in log
    arrays = {k: np.zeros(4, np.float32) for k in addon.ply.gaussian_names(0)}
    obj = addon.scene_sync.apply_snapshot(bpy.context.scene, "b" * 32, "gaussians", arrays, name="a duck")
    bpy.context.view_layer.objects.active = obj
    assert panels.DISTILLERY_PT_display.poll(bpy.context)
    log = draw(panels.DISTILLERY_PT_display)
    assert [e for e in log if e[0] == "prop"] == [("prop", f'["{i.identifier}"]') for i in
                                                  obj.modifiers["Distillery"].node_group.interface.items_tree
                                                  if getattr(i, "in_out", "") == "INPUT"
                                                  and i.socket_type != "NodeSocketGeometry"]


@pytest.mark.parametrize("mode", ["LAUNCH", "MANAGED", "CONNECT"])
def test_preferences_draw_in_every_mode(addon, mode):
    p = prefs(addon)
    p.mode = mode
    rt = addon.runtime.RUNTIME
    rt.view.state, rt.view.health = "alive", {"version": "0.1.0", "devices": [{"name": "cpu"}], "renderers": ["torch"]}
    log = draw_prefs()
    for op in ("distillery.backend_start", "distillery.backend_stop", "distillery.backend_restart"):
        assert ("operator", op) in log
    assert ("label", "Devices") in log and ("label", "cpu") in log
    if mode == "MANAGED":
        assert ("operator", "distillery.venv_install") in log
    assert PKG in bpy.context.preferences.addons
