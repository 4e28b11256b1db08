"""A bundle served by Triton, used like a local pipeline: ``predict --server URL MODEL image.png``.

Speaks KServe v2 over HTTP with the binary tensor extension (raw bytes, no JSON number lists),
using only the standard library: scanner software that offloads needs neither tritonclient nor
its numpy pin. Results are the same objects ``predict`` returns locally, so the CLI prints and
writes them identically; the class names and task come from the served model's configuration,
with its verdict and bundle hash (:mod:`edgemed.serve.triton_repository` puts them there).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, InputError
from ..feature_inputs import FeatureFeeds
from ..input_kinds import DEFAULT_INPUT_KIND, input_kind
from ..manifest import FeatureInput
from ..preprocess import check_image
from ..tasks import task_named

_DTYPES = {"FP32": np.float32, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "UINT16": np.uint16}


class RemotePipeline:
    def __init__(self, server: str, model: str, timeout: float = 60.0) -> None:
        self.base, self.model, self.timeout = server.rstrip("/"), model, timeout
        config = self._get(f"/v2/models/{model}/config")
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if "task" not in params:
            raise InputError(f"{model} on {server} was not exported by edgemed", "serve a bundle with edgemed serve")
        self.task, self.labels = params["task"], params["labels"].split(",")
        self.input_kind = params.get("input_kind") or DEFAULT_INPUT_KIND  # exported before: images only
        self.leads = tuple(params["leads"].split(",")) if params.get("leads") else None
        # the inputs beside the main one, in the model's order (the config says them as convert's --features)
        self.features = FeatureFeeds([FeatureInput(name=name, features=names.split(",")) for name, names in
                                      (spec.split("=", 1) for spec in params.get("features", "").split(";") if spec)])
        self.task_rules = task_named(self.task)
        self._output_names = [t.name for t in self.task_rules.served_outputs(self.labels)]
        if "ensemble_sha256" in params:  # an ensemble: its members' artifacts and the combination's verdict
            self.reason = (f"ensemble {params['ensemble_sha256'][:12]} of {params['artifact']} (combination verdict "
                           f"{params['verdict']}) on {server}")
        else:
            self.reason = (f"{params['artifact']} ({params['backend']}/{params['precision']}, verdict "
                           f"{params['verdict']}) of bundle {params['bundle_sha256'][:12]} on {server}")

    def _get(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(self.base + path, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise InputError(f"{self.base}{path}: {e.code} {_error(e)}", "check the model name and the server") from e
        except OSError as e:
            raise BackendUnavailable(f"cannot reach {self.base} ({e})", "start it with edgemed serve") from e

    def predict(self, image: Any, **describe: Any) -> Any:
        """One frame (or, for a signal model, one pre-cut beat described as ``predict`` takes it: ``fs=``,
        ``units=``, ``leads=``, ``adc_gain=``) and, for a model with inputs beside the main one, ``features=`` by
        name: the result ``predict`` gives, computed by the server."""
        features = describe.pop("features", None)
        if input_kind(self.input_kind).frames:
            if describe:
                raise InputError(f"{', '.join(describe)}: only signal models take a rate and units",
                                 "pass just the image")
            x = check_image(image)
            x = (x if x.ndim == 3 else x[:, :, None])[None]
            name, kind = {np.dtype(np.uint8): ("IMAGE_UINT8", "UINT8"),
                          np.dtype(np.uint16): ("IMAGE_UINT16", "UINT16")}.get(x.dtype, ("IMAGE_FP32", "FP32"))
            tensors = [(name, kind, np.ascontiguousarray(x, dtype=_DTYPES[kind]))]
        else:
            tensors = self._beat(image, describe)
        tensors += self._features(features)
        parts = [(n, k, np.ascontiguousarray(a)) for n, k, a in tensors]
        header = json.dumps({"inputs": [{"name": n, "shape": list(a.shape), "datatype": k,
                                         "parameters": {"binary_data_size": a.nbytes}} for n, k, a in parts],
                             "outputs": [{"name": n, "parameters": {"binary_data": False}} for n in self._output_names]}
                            ).encode()
        req = urllib.request.Request(f"{self.base}/v2/models/{self.model}/infer",
                                     data=header + b"".join(a.tobytes() for _, _, a in parts),
                                     headers={"Inference-Header-Content-Length": str(len(header))})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise InputError(f"the server refused the frame: {_error(e)}", "see the server's message") from e
        except OSError as e:
            raise BackendUnavailable(f"cannot reach {self.base} ({e})", "start it with edgemed serve") from e
        out = {o["name"]: np.array(o["data"], dtype=object if o["datatype"] == "BYTES" else _DTYPES[o["datatype"]])
               .reshape(o["shape"]) for o in body["outputs"]}
        result = self.task_rules.from_served(out, self.labels)
        result.timings = {"server_round_trip": time.perf_counter() - t0}
        return result

    def _beat(self, beat: Any, describe: dict) -> list[tuple[str, str, np.ndarray]]:
        """The beat in mV (T, leads) as the model reads its leads, and its rate: what the server prepares."""
        from ..io.signals import Signal, as_signal, check_description

        check_description(describe)
        sig = as_signal(beat, source="beat", **describe)
        if self.leads is not None and sig.leads != self.leads:
            sig = Signal(sig.samples[:, [sig.lead(n) for n in self.leads]], sig.fs, self.leads, sig.source)
        return [("SIGNAL_FP32", "FP32", sig.samples.astype(np.float32)[None]),
                ("FS", "FP32", np.array([[sig.fs]], np.float32))]

    def _features(self, given: Any) -> list[tuple[str, str, np.ndarray]]:
        """One (1, K) tensor per input beside the main one, from ``features=`` by name, checked by the rule
        ``predict`` uses (:class:`edgemed.feature_inputs.FeatureFeeds`)."""
        if not self.features:
            if given is not None:
                raise InputError("features: this model reads no input beside the main one", "leave features out")
            return []
        return [(name, "FP32", row) for name, row in self.features.one(given, None).items()]

    def close(self) -> None:
        pass

    def __enter__(self) -> RemotePipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _error(e: urllib.error.HTTPError) -> str:
    try:
        return json.loads(e.read() or b"{}").get("error", e.reason)
    except ValueError:
        return str(e.reason)
