"""The browser viewer: a viser server showing a trained model's splats, coloured by RGB, object or
class, with click-to-pick, isolate / hide / show all, exports, and the training cameras.

``Viewer`` holds the state (colour mode, picked object, hidden and isolated objects) and the viser
handles; every action is a method, so tests drive it without a browser and the GUI callbacks are
one line each. State is shared by every connected browser tab (one local user).

Convention: an object is what ``tools/objects.py extract`` selects (its id's Gaussians minus stray
groups): the highlight, isolate, hide and the exports all use that selection, and the panel shows
that object's row of ``tools/objects.py list``. Instance colours follow the PLY's ids (as the
renders' overlays do), so a click on a stray Gaussian still names its id's object.
"""
from __future__ import annotations

import contextlib
import errno
import html
import io
import os
import socket
import threading
from typing import Dict, List, Optional

import numpy as np
import torch

from tools import objects
from viewer.colours import highlight
from viewer.data import ViewerData, camera_pose

__all__ = ["ViewerError", "Viewer", "start_server", "check_port"]

FRUSTUM_SCALE = 0.015  # frustum size as a share of the scene's size
NONE = "(none)"  # the object list's entry when nothing matches


class ViewerError(Exception):
    """Bad input for the viewer (port in use, viser missing); the message is one line."""


def check_port(host: str, port: int) -> None:
    """Raise ViewerError when ``host:port`` cannot be bound (in use, or not allowed). viser itself would
    silently move to the next free port; the viewer is asked for one port and says so instead."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ViewerError(f"port {port} on {host} is in use (another viewer?); pass --port with a free "
                                  f"port, or stop the other server") from None
            raise ViewerError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --host / --port") from None


def start_server(host: str = "127.0.0.1", port: int = 8080):
    """A ``viser.ViserServer`` on exactly ``host:port`` (0 = any free port); ViewerError otherwise."""
    try:
        import viser
    except ImportError:
        raise ViewerError("viser is not installed; pip install -e '.[viewer]' (or pip install viser)") from None
    check_port(host, port)
    # viser prints its URL box even when not verbose; view.py prints one line instead
    with contextlib.redirect_stdout(io.StringIO()):
        server = viser.ViserServer(host=host, port=port, verbose=False)
    if port and server.get_port() != port:  # lost a race for the port: viser took the next one
        server.stop()
        raise ViewerError(f"port {port} on {host} is in use; pass --port with a free port")
    return server


def _fmt(v: List[float], digits: int = 3) -> str:
    return ", ".join(f"{x:.{digits}f}" for x in v)


class Viewer:
    """The viewer of one model on one viser server (see the module doc)."""

    def __init__(self, data: ViewerData, server, *, export_dir: Optional[str] = None):
        self.data, self.server = data, server
        self.lock = threading.RLock()
        self.mode = "Instance" if "Instance" in data.modes else "RGB"
        self.picked: Optional[int] = None  # object id
        self.picked_gaussian: Optional[int] = None  # index of the Gaussian the last click hit
        self.hidden: set = set()  # object ids
        self.isolated: Optional[int] = None
        self.shown = 0  # Gaussians on the page now
        self.info_text = ""  # the picked-object panel as plain text (what the page shows)
        self.export_dir = export_dir or os.path.join(data.model_path, "exports")
        self._ids = None if data.ids is None else data.ids.numpy()  # [N] extract's ids
        self._column_ids = None if data.column_ids is None else data.column_ids.numpy()  # [N] the PLY's ids
        self._syncing = False  # set while the code (not the user) changes a GUI value
        self._choices: Dict[str, int] = {}  # object list label -> id
        self._build_scene()
        self._build_gui()
        self.refresh()
        self._show_info()

    # ----- scene -----------------------------------------------------------------------------
    def _build_scene(self) -> None:
        d, scene = self.data, self.server.scene
        self.centre, self.size = d.scene_centre_and_size()
        sel = d.display
        self.splats = scene.add_gaussian_splats("/splats", d.means[sel], d.covariances, d.colours(self.mode)[sel],
                                                d.opacities[sel, None])
        self.frusta = []
        self.at_view: Optional[int] = None  # the training view the camera was last sent to
        self.camera_root = scene.add_frame("/cameras", show_axes=False)
        if d.cameras:
            ups = np.stack([-np.linalg.inv(c.world_view)[:3, 1] for c in d.cameras])  # OpenCV: up is -y
            up = ups.mean(0)
            up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
            scene.set_up_direction(up)
            for k, cam in enumerate(d.cameras):
                pos, wxyz, fov, aspect = camera_pose(cam)
                fr = scene.add_camera_frustum(f"/cameras/{k:04d}", fov=fov, aspect=aspect,
                                              scale=FRUSTUM_SCALE * self.size, thickness=1.5,
                                              thickness_units="screen", color=(40, 70, 200), wxyz=wxyz, position=pos)
                fr.on_click(lambda event, k=k: self.go_to_view(event.client, k))
                self.frusta.append(fr)
            self._mark_view(0)
            pos, look_at, up, fov = self._view_pose(0)
            ic = self.server.initial_camera
            ic.position, ic.look_at, ic.up, ic.fov = pos, look_at, up, fov
        else:
            ic = self.server.initial_camera
            ic.look_at = self.centre
            ic.position = self.centre + self.size * np.array([0.6, -0.6, 0.4])
        self.server.scene.on_click()(self._on_click)

    def _mark_view(self, k: int) -> None:
        """Hide the frustum of the view the camera was sent to (seen from inside, its edges frame the page)."""
        for j, fr in enumerate(self.frusta):
            fr.visible = j != k
        self.at_view = k

    def _view_pose(self, k: int) -> tuple:
        """(position, look_at, up, vertical fov) of training view ``k``; look_at lies on its optical axis
        at the depth of the scene centre (at least 5 % of the scene size ahead)."""
        pos, _, fov, _ = camera_pose(self.data.cameras[k])
        c2w = np.linalg.inv(self.data.cameras[k].world_view)
        fwd, up = c2w[:3, 2], -c2w[:3, 1]
        depth = max(float((self.centre - pos) @ fwd), 0.05 * self.size)
        return pos, pos + depth * fwd, up, fov

    def visible(self) -> np.ndarray:
        """[N] bool: Gaussians not hidden by isolate / hide (the display subset aside)."""
        N = self.data.num_gaussians
        if self._ids is None:
            return np.ones(N, dtype=bool)
        vis = self._ids == self.isolated if self.isolated is not None else np.ones(N, dtype=bool)
        if self.hidden:
            vis &= ~np.isin(self._ids, np.fromiter(self.hidden, dtype=self._ids.dtype))
        return vis

    def refresh(self) -> None:
        """Send the displayed Gaussians with the current colours, visibility and highlight."""
        d = self.data
        with self.lock:
            keep = self.visible()[d.display]  # [M]
            sel = d.display[keep]
            self.shown = int(len(sel))
            if self.shown == 0:
                self.splats.visible = False
                return
            cols, opac = d.colours(self.mode)[sel], d.opacities[sel]
            if self.picked is not None and self._ids is not None:
                cols, opac = highlight(cols, opac, self._ids[sel] == self.picked)
            self.splats.set_gaussians(d.means[sel], d.covariances[keep], cols, opac[:, None].astype(np.float32))
            self.splats.visible = True

    # ----- picking ---------------------------------------------------------------------------
    def _on_click(self, event) -> None:
        self.pick_ray(event.ray_origin, event.ray_direction)

    def pick_ray(self, origin, direction) -> Optional[int]:
        """Pick what the ray meets first among the shown Gaussians; select its object. Returns the
        object id (0 = stuff) or None when the ray meets nothing."""
        with self.lock:
            g = self.data.picker.pick(origin, direction, candidates=torch.from_numpy(self.visible()))
            self.picked_gaussian = g if g >= 0 else None
            if g < 0:
                self.select(None, note="Nothing under the cursor.")
                return None
            if self._column_ids is None:
                self.select(None, note=f"Gaussian {g}: this model has no object ids.")
                return None
            oid = int(self._column_ids[g])
            if oid == 0:
                self.select(None, note=f"Gaussian {g} is stuff (id 0: walls, floor, ...), not an object.")
                return 0
            stray = int(self._ids[g]) == 0
            self.select(oid, note=(f"You clicked a stray Gaussian of id {oid} (left out of the object by the "
                                   f"stray filter)." if stray else None))
            return oid

    def select(self, oid: Optional[int], note: Optional[str] = None) -> None:
        """Make ``oid`` the picked object (None: no object) and update the page."""
        with self.lock:
            self.picked = oid
            self._show_info(note)
            self._syncing = True
            try:
                label = next((k for k, v in self._choices.items() if v == oid), None)
                if label is not None:
                    self.gui_list.value = label
            finally:
                self._syncing = False
            self.refresh()

    def _show_info(self, note: Optional[str] = None) -> None:
        row = self.data.rows.get(self.picked) if self.picked is not None else None
        lines, body = [], []
        if self.picked is None:
            lines.append("No object picked: click a splat, or choose one in Objects.")
        elif row is None:
            lines.append(f"Object id {self.picked}: no Gaussians left after the stray filter.")
        else:
            cls = "-" if row.semantic is None else (f"{row.class_name} ({row.semantic})" if row.class_name
                                                   else f"class {row.semantic}")
            lines += [f"Object {row.id}", f"class: {cls}", f"Gaussians: {row.gaussians:,}",
                      f"size (x, y, z): {_fmt(row.extent)}", f"centroid: {_fmt(row.centroid)}",
                      f"colour: {row.color}"]
            state = ("hidden" if row.id in self.hidden else
                     "isolated" if self.isolated == row.id else None)
            if state:
                lines.append(f"({state})")
        if note:
            lines.append(note)
        self.info_text = "\n".join(lines)
        for k, line in enumerate(lines):
            text = html.escape(line)
            if k == 0 and row is not None:
                text = (f"<b>{text}</b> <span style='display:inline-block;width:0.9em;height:0.9em;"
                        f"background:{row.color};border:1px solid #555;vertical-align:middle'></span>")
            body.append(text)
        if hasattr(self, "gui_info"):
            self.gui_info.content = "<div style='font-size:0.85em;line-height:1.5'>" + "<br>".join(body) + "</div>"
            enabled = row is not None
            for b in (self.gui_isolate, self.gui_hide, self.gui_export, self.gui_export_without, self.gui_look):
                b.disabled = not enabled

    # ----- actions ---------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        if mode not in self.data.modes:
            raise ValueError(f"colour mode {mode!r} is not available for this model ({', '.join(self.data.modes)})")
        with self.lock:
            self.mode = mode
            if self.gui_mode.value != mode:  # called from code: show it in the dropdown too
                self._syncing = True
                try:
                    self.gui_mode.value = mode
                finally:
                    self._syncing = False
            self.refresh()

    def isolate(self) -> None:
        with self.lock:
            if self.picked is not None:
                self.isolated = self.picked
                self.hidden.discard(self.picked)
                self._show_info()
                self.refresh()

    def hide(self) -> None:
        with self.lock:
            if self.picked is not None:
                self.hidden.add(self.picked)
                if self.isolated == self.picked:
                    self.isolated = None
                self.select(None, note=f"Object {self.picked} hidden; Show all brings it back.")

    def show_all(self) -> None:
        with self.lock:
            self.hidden.clear()
            self.isolated = None
            self._show_info()
            self.refresh()

    def export(self, without: bool = False, folder: Optional[str] = None) -> tuple:
        """Write the picked object (``without``: the scene without it) as a 3DGS PLY with
        ``tools.objects.extract`` / ``remove`` (atomic). Returns (path, Gaussians written)."""
        with self.lock:
            oid = self.picked
        if oid is None or oid not in self.data.rows:
            raise objects.ObjectsError("no object picked; click one first")
        folder = folder or self.export_dir
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{'without' if without else 'object'}_{oid}.ply")
        n = (objects.remove if without else objects.extract)(self.data.labels, [oid], path)
        return path, n

    def go_to_view(self, client, k: int) -> None:
        """Move ``client``'s camera to training view ``k``."""
        pos, look_at, up, fov = self._view_pose(k)
        self._mark_view(k)
        with client.atomic():
            client.camera.fov = fov
            client.camera.position = pos
            client.camera.look_at = look_at
            client.camera.up_direction = up

    def look_at_picked(self, client) -> None:
        row = self.data.rows.get(self.picked) if self.picked is not None else None
        if row is not None:
            client.camera.look_at = np.asarray(row.centroid)

    # ----- GUI -------------------------------------------------------------------------------
    def _header(self) -> str:
        d = self.data
        parts = [f"**{os.path.basename(os.path.normpath(d.model_path))}** · iteration {d.iteration} · "
                 f"{d.num_gaussians:,} Gaussians"]
        if d.table is not None:
            n = len(d.listed())
            parts[0] += f" · {n} object{'' if n == 1 else 's'}"
        parts += [f"_{n}_" for n in d.notes]
        return "  \n".join(parts)

    def _build_gui(self) -> None:
        gui, d = self.server.gui, self.data
        gui.configure_theme(control_width="medium", show_share_button=False)
        self.gui_header = gui.add_markdown(self._header())
        self.gui_mode = gui.add_dropdown("Colour", d.modes, initial_value=self.mode)
        self.gui_mode.on_update(lambda _: None if self._syncing else self.set_mode(self.gui_mode.value))
        with gui.add_folder("Picked object"):
            self.gui_info = gui.add_html("")
            self.gui_isolate = gui.add_button("Isolate", hint="show only this object")
            self.gui_hide = gui.add_button("Hide", hint="hide this object")
            self.gui_show_all = gui.add_button("Show all")
            self.gui_look = gui.add_button("Look at it", hint="turn the camera to the object")
            self.gui_export_dir = gui.add_text("Export folder", self.export_dir)
            self.gui_export = gui.add_button("Export object", hint="object_<id>.ply (tools/objects.py extract)")
            self.gui_export_without = gui.add_button("Export scene without it",
                                                     hint="without_<id>.ply (tools/objects.py remove)")
        self.gui_isolate.on_click(lambda _: self.isolate())
        self.gui_hide.on_click(lambda _: self.hide())
        self.gui_show_all.on_click(lambda _: self.show_all())
        self.gui_look.on_click(lambda e: self.look_at_picked(e.client))
        self.gui_export.on_click(lambda e: self._export_clicked(e.client, False))
        self.gui_export_without.on_click(lambda e: self._export_clicked(e.client, True))
        with gui.add_folder("Objects", visible=d.table is not None):
            self.gui_search = gui.add_text("Search", "", hint="id or class name")
            self.gui_list = gui.add_dropdown("Object", [NONE])
        self._fill_list("")
        self.gui_search.on_update(lambda _: self._fill_list(self.gui_search.value))
        self.gui_list.on_update(lambda _: self._list_chosen())
        if d.cameras:
            with gui.add_folder("Training views", expand_by_default=False):
                self.gui_cameras = gui.add_checkbox("Show cameras", True)
                self.gui_view = gui.add_dropdown("View", [c.name for c in d.cameras])
                self.gui_go = gui.add_button("Go to view")
            self.gui_cameras.on_update(lambda _: setattr(self.camera_root, "visible", self.gui_cameras.value))
            self.gui_go.on_click(lambda e: self.go_to_view(
                e.client, [c.name for c in d.cameras].index(self.gui_view.value)))

    def _fill_list(self, query: str) -> None:
        """Object list entries matching ``query`` (a substring of "id · class · count", any case)."""
        q = query.strip().lower()
        choices = {}
        for r in self.data.listed():
            name = r.class_name or ("object" if r.semantic is None else f"class {r.semantic}")
            label = f"{r.id} · {name} · {r.gaussians:,}"
            if not q or q in label.lower():
                choices[label] = r.id
        self._choices = choices
        self._syncing = True
        try:
            self.gui_list.options = [NONE, *choices]
            current = next((k for k, v in choices.items() if v == self.picked), NONE)
            self.gui_list.value = current
        finally:
            self._syncing = False

    def matches(self, query: str) -> List[int]:
        """Ids the object list shows for ``query`` (what the search box does)."""
        self._fill_list(query)
        return list(self._choices.values())

    def _list_chosen(self) -> None:
        if self._syncing:
            return
        oid = self._choices.get(self.gui_list.value)
        if oid is not None and oid != self.picked:
            self.select(oid)

    def _export_clicked(self, client, without: bool) -> None:
        try:
            path, n = self.export(without, folder=self.gui_export_dir.value.strip() or None)
        except (objects.ObjectsError, OSError) as e:
            client.add_notification("Export failed", str(e), color="red", auto_close_seconds=8.0)
            return
        client.add_notification("Exported", f"{path}: {n:,} Gaussians", auto_close_seconds=8.0)
