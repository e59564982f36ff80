"""Convert to mesh: any Gaussian object -> a textured mesh made by the backend, as a new object beside it.

The operator (operators.py, main thread) reads the object's Gaussians into a 3DGS PLY in memory and starts
`convert_worker` in a thread with `start()`.
The worker (never touches bpy) uploads it with `Session.submit_mesh` (POST /v1/meshes: a job of the same queue
as generations), polls the job to its end, downloads `asset.glb` (or `asset.ply`, the mesh with vertex
colours, when Blender has no glTF importer) to a temporary file and posts a message. The pump hands those
messages to `apply()`, which imports the file with Blender's glTF importer, puts the object in the Distillery
collection with the Gaussian object's transform, and says what happened in the panel's job line.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

import bpy

from . import scene_sync
from .client import ply as plyio

MESSAGES = ("mesh_submitted", "mesh_ready", "mesh_failed")
POLL_WAIT_S = 3.0
GIVE_UP_S = 3600.0  # a conversion queued behind long generations may wait; this bounds the worker thread
MESH_OF_KEY = "distillery_mesh_of"  # on the new object: the name of the Gaussian object it was made from
_STOPS: list[threading.Event] = []  # one per running worker; set at unregister


def is_gaussian_object(obj: Any) -> bool:
    """Any mesh object that stores 3DGS attributes (generated here or imported from a PLY)."""
    return obj is not None and obj.type == "MESH" and "opacity" in obj.data.attributes


def gltf_importer() -> bool:
    """Whether Blender's glTF importer is available (enabling the bundled add-on if it is off)."""
    if hasattr(bpy.types, "IMPORT_SCENE_OT_gltf"):
        return True
    try:
        import addon_utils

        addon_utils.enable("io_scene_gltf2", default_set=True)
    except Exception:
        return False
    return hasattr(bpy.types, "IMPORT_SCENE_OT_gltf")


def start(mailbox: Any, session: Any, scene_name: str, obj: Any) -> None:
    """Main thread: the object's Gaussians as PLY bytes, then the worker thread. Raises PLYError/ValueError when
    the object's attributes do not make a 3DGS PLY."""
    ply = plyio.write_gaussians(None, scene_sync.get_gaussians(obj.data))
    stop = threading.Event()
    _STOPS.append(stop)
    threading.Thread(target=convert_worker, args=(mailbox, session, scene_name, obj.name, ply, {}, gltf_importer(),
                                                  stop), name="distillery-mesh", daemon=True).start()


# ---------------------------------------------------------------------------------------------- worker thread


def convert_worker(mailbox: Any, session: Any, scene_name: str, obj_name: str, ply: bytes, settings: dict,
                   glb: bool, stop: threading.Event) -> None:
    """Runs in its own thread: upload, wait for the job, download the mesh, post the outcome. Never bpy."""
    where = {"scene": scene_name, "object": obj_name}
    job_id = ""
    try:
        handle = session.submit_mesh(ply, settings)
        job_id = handle.job_id
        mailbox.post("mesh_submitted", job_id, where)
        state, error = "", {}
        deadline = time.monotonic() + GIVE_UP_S
        while state not in ("succeeded", "failed", "cancelled"):
            if stop.is_set() or time.monotonic() > deadline:
                return
            for ev in handle.poll_once(wait=POLL_WAIT_S):
                if ev.get("type") == "error":
                    error = ev
                elif ev.get("type") == "status":
                    state = ev.get("state", state)
        if state != "succeeded":
            mailbox.post("mesh_failed", job_id, {**where, "code": error.get("code", state.upper()),
                                                 "message": error.get("message", f"the conversion {state}")})
            return
        name = "asset.glb" if glb else "asset.ply"
        fd, path = tempfile.mkstemp(prefix=f"distillery-{job_id[:8]}-", suffix=os.path.splitext(name)[1])
        with os.fdopen(fd, "wb") as f:
            f.write(handle.download(name))
        mailbox.post("mesh_ready", job_id, {**where, "path": path, "format": "glb" if glb else "ply"})
    except Exception as exc:  # a failed upload or download is a message in the panel, not a dead thread
        mailbox.post("mesh_failed", job_id, {**where, "code": getattr(exc, "code", "CLIENT"),
                                             "message": getattr(exc, "message", None) or str(exc)})
    finally:
        if stop in _STOPS:
            _STOPS.remove(stop)


# ---------------------------------------------------------------------------------------------- main thread


def apply(msg: Any) -> bool:
    """Apply one of MESSAGES (pump, main thread). Returns whether the scene changed."""
    scene = bpy.data.scenes.get(msg.data.get("scene", "")) or bpy.context.scene
    s = scene.distillery
    src_name = msg.data.get("object", "")
    if msg.kind == "mesh_submitted":
        s.job_message = f"converting {src_name} to a mesh"
        return True
    if msg.kind == "mesh_failed":
        s.job_message = f"Convert to mesh failed ({msg.data.get('code', '')}): {msg.data.get('message', '')}"
        return True
    path = msg.data["path"]
    try:
        obj = import_mesh(scene, path, msg.data["format"], bpy.data.objects.get(src_name), src_name, msg.job_id)
    finally:
        os.unlink(path)
    s.job_message = f"{obj.name}: {len(obj.data.polygons)} faces, made from {src_name}"
    return True


def import_mesh(scene: Any, path: str, fmt: str, source: Any, source_name: str, job_id: str) -> Any:
    """The mesh object from a downloaded GLB (textured) or mesh PLY (vertex colours), named "<source> mesh",
    in the Distillery collection, with the Gaussian object's transform."""
    name = f"{source_name} mesh"
    if fmt == "glb":
        before = set(bpy.data.objects.keys())
        bpy.ops.import_scene.gltf(filepath=path)
        new = [o for o in bpy.data.objects if o.name not in before]
        meshes = [o for o in new if o.type == "MESH"]
        if not meshes:
            raise RuntimeError("the GLB held no mesh")
        for o in new:
            if o.type != "MESH":
                bpy.data.objects.remove(o)
        obj = meshes[0]
        obj.name = name
        for coll in list(obj.users_collection):
            coll.objects.unlink(obj)
        scene_sync.ensure_collection(scene).objects.link(obj)
    else:
        verts, faces, colors = plyio.read_mesh(path)
        obj = scene_sync.create_object(scene, job_id, name, "mesh", location=(0.0, 0.0, 0.0))
        scene_sync.set_mesh(obj.data, verts, faces, colors)
    if source is not None:
        obj.matrix_world = source.matrix_world @ obj.matrix_world
    obj[scene_sync.JOB_KEY] = job_id
    obj[scene_sync.KIND_KEY] = "mesh"
    obj[scene_sync.STATE_KEY] = "succeeded"
    obj[MESH_OF_KEY] = source_name
    return obj


def unregister() -> None:
    """Stop the running workers (they post nothing more)."""
    for stop in list(_STOPS):
        stop.set()
