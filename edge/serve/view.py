"""``edgemed view``: a page on 127.0.0.1 where a person drops an image and sees the answer.

Flask (a well-kept framework) serves one self-contained page (no CDN: it works offline) and one
endpoint that runs the very Pipeline ``predict`` uses. The page shows the frame with the mask or the
boxes drawn, the label and probabilities, the per-stage timings, which artifact ran and its verdict;
for a bundle converted with ``--explain`` a "show explanation" toggle lays the saliency map (the rendering
``predict --out`` writes, :mod:`edgemed.io.saliency_overlay`) over the frame with an opacity slider, labelled as an
explanation and not a finding; for a DICOM upload it offers the SEG/SR/SC (:mod:`edgemed.pacs.results`) for
download. Uploads are read from memory-bounded temporary files and deleted with their results when the server stops.
"""

from __future__ import annotations

import base64
import html
import io
import re
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks import task_named

MAX_UPLOAD = 64 * 1024 * 1024

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgemed view</title>
<style>
 body{font-family:system-ui,sans-serif;margin:24px;background:#111;color:#eee}
 #drop{border:2px dashed #888;padding:24px;text-align:center;border-radius:8px}
 #drop.over{border-color:#4af}
 #result{display:flex;gap:24px;margin-top:16px}
 img{max-width:640px;image-rendering:pixelated;border:1px solid #444}
 #frame{position:relative;align-self:flex-start} #frame img{display:block;box-sizing:border-box}
 #saliency{position:absolute;left:0;top:0;width:100%;height:100%} #saliency[hidden]{display:none}
 #explain{margin-top:12px} #explain-note{color:#fc6}
 table{border-collapse:collapse} td{padding:2px 8px;border-bottom:1px solid #333}
 .err{color:#f66}
</style></head><body>
<h1>edgemed view: __MODEL__</h1>
<p>__ARTIFACT__</p>
<form id="form"><div id="drop">Drop a PNG, JPEG, TIFF or DICOM file here, or
 <input id="file" type="file" name="file"> <button id="go" type="submit">Analyse</button></div></form>
__EXPLAIN__<div id="result"><div id="frame"><img id="overlay" alt=""><img id="saliency" alt="saliency map" hidden>
</div><div id="facts"></div></div>
<script>
const form=document.getElementById('form'),drop=document.getElementById('drop'),file=document.getElementById('file');
drop.addEventListener('dragover',e=>{e.preventDefault();drop.classList.add('over')});
drop.addEventListener('dragleave',()=>drop.classList.remove('over'));
drop.addEventListener('drop',e=>{e.preventDefault();drop.classList.remove('over');file.files=e.dataTransfer.files;send()});
form.addEventListener('submit',e=>{e.preventDefault();send()});
const show=document.getElementById('show-explanation'),opacity=document.getElementById('opacity'),
 sal=document.getElementById('saliency');
function drawExplanation(){
 sal.hidden=!(show&&show.checked&&sal.dataset.ready==='1');
 if(opacity)sal.style.opacity=String(opacity.value/100);
}
if(show){show.addEventListener('change',drawExplanation);opacity.addEventListener('input',drawExplanation)}
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
async function send(){
 const facts=document.getElementById('facts');
 if(!file.files.length){facts.innerHTML='<p class="err">choose a file first</p>';return}
 const body=new FormData();body.append('file',file.files[0]);
 facts.textContent='analysing...';sal.dataset.ready='0';sal.removeAttribute('src');drawExplanation();
 let r,j;
 try{r=await fetch('predict',{method:'POST',body});j=await r.json()}
 catch(e){facts.innerHTML='<p class="err">the server gave no answer ('+esc(r?r.status+' '+r.statusText:e)+
  '); see the terminal running edgemed view</p>';document.body.dataset.done='1';return}
 if(!r.ok){facts.innerHTML='<p class="err">'+esc(j.error)+'</p>';document.body.dataset.done='1';return}
 document.getElementById('overlay').src='data:image/png;base64,'+j.overlay_png;
 if(j.saliency_png){sal.src='data:image/png;base64,'+j.saliency_png;sal.dataset.ready='1'}
 drawExplanation();
 let h='<table>';
 for(const [k,v] of Object.entries(j.summary))h+='<tr><td>'+esc(k)+'</td><td>'+esc(v)+'</td></tr>';
 h+='</table>';
 const link=d=>'<a id="dl-'+esc(d.kind)+'" href="'+esc(d.url)+'" download>'+esc(d.name)+'</a>';
 if(j.downloads.length){h+='<p>DICOM results: '+j.downloads.map(link).join(' ')+'</p>'}
 facts.innerHTML=h;document.body.dataset.done='1';
}
</script></body></html>
"""

# Shown only for bundles that carry an explanation (manifest.explain): the toggle, the slider, and what the map is.
EXPLAIN = """<div id="explain"><label><input type="checkbox" id="show-explanation"> show explanation</label>
 <label>opacity <input type="range" id="opacity" min="0" max="100" value="100"></label>
 <p id="explain-note">Explanation (__METHOD__ saliency map): where the model weighted evidence for its answer, for
 quality assurance. Not a finding: it does not outline a lesion.</p></div>
"""


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def summary(pipe: Any, result: Any) -> dict[str, str]:
    out = {"artifact": f"{pipe.artifact.file} ({pipe.artifact.backend}/{pipe.artifact.precision})",
           "verdict": pipe.artifact.verdict}
    out.update(task_named(pipe.task).figures(result, pipe.labels))
    out.update({f"{k} ms": f"{v * 1e3:.2f}" for k, v in result.timings.items()})
    return out


def check_viewable(pipe: Any) -> None:
    """The page shows frames; a signal bundle is refused before anything starts listening."""
    from ..errors import InputError
    from ..input_kinds import input_kind

    if not input_kind(pipe.input_kind).frames:
        raise InputError(f"edgemed view shows images, and {pipe.bundle.name} reads signals (ECG beats)",
                         f"run edgemed predict {pipe.bundle.name} RECORD.hea for its beats")


def make_app(pipe: Any, workdir: Path):
    from flask import Flask, abort, jsonify, request, send_from_directory
    from werkzeug.utils import secure_filename

    from ..errors import EdgemedError, InputError, first_line
    from ..io.images import is_dicom, read_frames
    from ..io.saliency_overlay import saliency_picture
    from ..pacs.results import KINDS, write_objects

    check_viewable(pipe)

    app = Flask("edgemed.serve.view")
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD
    lock = threading.Lock()
    page = PAGE.replace("__MODEL__", pipe.bundle.name).replace(
        "__ARTIFACT__", f"{pipe.artifact.file}: {pipe.artifact.backend}/{pipe.artifact.precision}, verdict "
        f"{pipe.artifact.verdict} ({pipe.reason})")
    explain = pipe.bundle.manifest.explain
    page = page.replace("__EXPLAIN__", "" if explain is None else
                        EXPLAIN.replace("__METHOD__", html.escape(explain.method.upper())))

    @app.get("/")
    def index():
        return page

    @app.post("/predict")
    def predict():
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            return jsonify(error="no file in the request; choose a PNG, JPEG, TIFF or DICOM file"), 400
        job = secrets.token_hex(8)
        folder = workdir / job
        folder.mkdir()
        # werkzeug's secure_filename: no path parts ("..", "a/b", "C:\\x"), no NUL or line breaks; the suffix, which
        # picks the decoder, stays ("..", ".", NUL in a name gave a 500 from saving onto the folder itself)
        name = secure_filename(upload.filename) or "upload"
        src = folder / name
        upload.save(src)
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).stem)[:80] or "result"

        def said(exc: object) -> str:  # the user's file name, never the server's temporary folder
            return str(exc).replace(str(src), name).replace(str(folder), "").replace(str(workdir), "")

        try:
            frames = read_frames(src)
            if not frames:
                raise InputError(f"{upload.filename}: the file holds no frames", "upload an image with pixels")
            with lock:
                result = pipe.predict(frames[0])
                downloads = []
                if is_dicom(src):
                    results = [result] + [pipe.predict(f) for f in frames[1:]]
                    for path in write_objects(pipe, src, frames, results, folder / stem, KINDS, strict=False):
                        kind = path.name.split(".")[-2]
                        downloads.append({"kind": kind, "name": path.name, "url": f"download/{job}/{path.name}"})
            answer = {"overlay_png": _png(task_named(pipe.task).render(frames[0], result, pipe.labels)),
                      "summary": summary(pipe, result), "result": result.to_json(), "downloads": downloads}
            saliency = getattr(result, "saliency", None)  # made here, on demand: only --explain bundles have one
            if saliency is not None:
                answer["saliency_png"] = _png(np.asarray(saliency_picture(frames[0], saliency)))
        except EdgemedError as exc:
            return jsonify(error=said(exc)), 400
        except Exception as exc:  # noqa: BLE001 - a bug must still reach the page as a message, not hang it
            app.logger.exception("analysing %s failed", name)
            return jsonify(error=f"internal error analysing {name}: {type(exc).__name__}: "
                                 f"{said(first_line(exc))} (please report it)"), 500
        finally:
            src.unlink(missing_ok=True)
        return jsonify(answer)

    @app.get("/download/<job>/<name>")
    def download(job: str, name: str):
        # a job is the 16 hex digits predict made; anything else (a 5,000-character name raised OSError
        # ENAMETOOLONG from the file system: a 500) is no job. send_from_directory keeps name inside the folder.
        if len(job) != 16 or any(c not in "0123456789abcdef" for c in job) or not (workdir / job).is_dir():
            abort(404)
        return send_from_directory(workdir / job, name, as_attachment=True)

    return app


def serve(pipe: Any, host: str = "127.0.0.1", port: int = 8080, ready: threading.Event | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM arrive as KeyboardInterrupt); uploads go with the server."""
    from werkzeug.serving import make_server

    with tempfile.TemporaryDirectory(prefix="edgemed-view-") as tmp:
        server = make_server(host, port, make_app(pipe, Path(tmp)), threaded=True)
        if ready is not None:
            ready.set()
        try:
            server.serve_forever()
        finally:
            server.server_close()
