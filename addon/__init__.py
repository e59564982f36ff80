"""Distillery: text to 3D by score distillation, live in the scene (Blender 4.2-5.0 extension).

register()/unregister() only. Submodules are imported here, not at module level, so `addon.client` (stdlib and
numpy) stays importable without Blender. Nothing here touches the network or starts a process.
"""


def _modules():
    from . import operators, panels, preferences, properties, runtime

    return runtime, preferences, properties, operators, panels


def register() -> None:
    runtime, preferences, properties, operators, panels = _modules()
    runtime.register()
    preferences.register()
    properties.register()
    operators.register()
    panels.register()


def unregister() -> None:
    runtime, preferences, properties, operators, panels = _modules()
    panels.unregister()
    operators.unregister()
    properties.unregister()
    preferences.unregister()
    runtime.unregister()
