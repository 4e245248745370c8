"""The Python entry points behind `lifelong edit`: load a model and requests, run a protocol, and write the
results into the output directory as the run goes, so a killed run keeps every finished edit and `--resume`
continues it.

The output directory while a run is under way (docs/editing.md):

    run.json                 {"status": "running" | "finished", the settings and their hashes}: a folder
                             with status "running" is an interrupted (or still running) run
    per_request.jsonl        one line per finished request, appended (flushed, fsync) as each group finishes
    state/pre.json           the pre-edit predictions (computed once on the unedited model)
    state/latest             the name of the newest complete state folder, replaced atomically
    state/<done>/            progress.json (requests done, timings, retention), editor.pt (Editor.state_dict
                             and the torch RNG), params.safetensors (the current values of the edited
                             parameters) and deltas.safetensors (the summed exact updates): written in a
                             temporary folder, renamed into place, then `latest` moves
and when it ends (each file atomically): metrics.json, metrics.md, final_per_request.jsonl (sequential: every
edit re-scored on the final model), deltas.safetensors and model/ (weight editors, sequential),
editor_state.pt (editors whose edits live outside the weights, e.g. GRACE's codebook); run.json becomes
"finished" and state/ is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from lifelong.data.edit_requests import load_requests
from lifelong.editing import EDITORS, Editor
from lifelong.faults import fault_point
from lifelong.fileio import atomic_write_json, atomic_write_text, remove_stale_temporaries

RUN_FILE = "run.json"
STATE = "state"
ROWS = "per_request.jsonl"


def model_config(spec: str) -> Any:
    from lifelong.config import ModelConfig

    if spec.startswith("package:"):
        return ModelConfig(package=spec.split(":", 1)[1])
    return ModelConfig(path=spec)


def build(method: str, overrides: list[str] | dict | None = None) -> Editor:
    """An editor from its name and `key=value` overrides (dotted keys for nested settings)."""
    from lifelong.configio import apply_overrides

    cls = EDITORS.get(method)
    raw = overrides if isinstance(overrides, dict) else apply_overrides({}, list(overrides or []))
    try:
        return cls(cls.Params(**raw))
    except ValidationError as err:
        msgs = [
            f"{method}.{'.'.join(str(x) for x in e['loc'])}: "
            f"{'unknown parameter' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in err.errors()
        ]
        raise ValueError("; ".join(msgs) + f" (see `lifelong ls editors` for {method}'s parameters)") from None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def resumable(editor: Editor, protocol: str) -> bool:
    """Whether an interrupted run can be continued exactly: rollback runs always (every edit is undone);
    sequential runs when the edits are in the weights or in the editor's `state_dict` (not in-context)."""
    return protocol == "rollback" or editor.changes_weights or type(editor).state_dict is not Editor.state_dict


def read_run(dest: Path) -> Optional[dict]:
    """The run.json of an edit output directory (None when there is none or it cannot be read)."""
    try:
        run = json.loads((dest / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) else None


def _done_so_far(dest: Path) -> int:
    try:
        return int((dest / STATE / "latest").read_text().strip())
    except (OSError, ValueError):
        return 0


def check_out(dest: Path, resume: bool, settings: dict, hashes: dict) -> Optional[dict]:
    """Decide what an existing --out means: None to start a new run there, the saved run.json to resume,
    else a ValueError saying why not and what to do."""
    if not dest.exists() or not any(dest.iterdir()):
        return None
    run = read_run(dest)
    if run is None:
        raise ValueError(
            f"{dest} already exists and is not empty (and holds no edit run to resume); choose another --out "
            "(nothing is overwritten)"
        )
    if run.get("status") == "finished":
        raise ValueError(
            f"{dest} holds a finished edit run ({run.get('requests')} requests); "
            + ("there is nothing to resume" if resume else "choose another --out (nothing is overwritten)")
        )
    done = _done_so_far(dest)
    if not resume:
        raise ValueError(
            f"{dest} holds an interrupted edit run ({done} of {run.get('requests')} requests done); add --resume "
            "to continue it, or choose another --out"
        )
    saved, saved_hashes = run.get("settings", {}), run.get("hashes", {})
    diff = []
    if saved_hashes.get("requests") != hashes["requests"]:
        diff.append(
            f"the requests file differs (was {saved.get('requests_file')}, hash {saved_hashes.get('requests')})"
        )
    if saved.get("method") != settings["method"]:
        diff.append(f"method {settings['method']} (was {saved.get('method')})")
    elif saved_hashes.get("params") != hashes["params"]:
        old, new = saved.get("params", {}), settings["params"]
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        diff.append("params " + ", ".join(f"{k}={new.get(k)!r} (was {old.get(k)!r})" for k in keys))
    for key in ("protocol", "group", "every", "fluency_tokens", "seed"):
        if saved.get(key) != settings[key]:
            diff.append(f"{key} {settings[key]} (was {saved.get(key)})")
    if diff:
        raise ValueError(
            f"{dest} holds an interrupted run with other settings: {'; '.join(diff)}; resume with the same "
            "settings, or choose another --out"
        )
    if run.get("resumable") is False:
        raise ValueError(
            f"{dest}: {settings['method']} keeps its sequential edits only in memory, so an interrupted run "
            "cannot be continued exactly; start again in another --out"
        )
    return run


def _write_bytes_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows as json lines, flushed and synced, so a kill -9 after this keeps them."""
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path, done: int) -> list[dict]:
    """The rows of the first `done` requests from per_request.jsonl (a line cut by a kill and rows of a group
    whose state was not saved are left out); the file is rewritten (atomically) to hold exactly them."""
    rows: dict[int, dict] = {}
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("index"), int) and row["index"] < done:
            rows.setdefault(row["index"], row)
    if sorted(rows) != list(range(done)):
        missing = sorted(set(range(done)) - set(rows))
        raise ValueError(
            f"{path} lacks the rows of {len(missing)} finished requests (first: {missing[0]}); the run cannot be "
            "resumed; start again in another --out"
        )
    out = [rows[i] for i in range(done)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in out))
    return out


class StateWriter:
    """Saves a run's state after each group into state/<done>/ (written under a temporary name, renamed,
    then `state/latest` moves to it) and loads the newest complete one back."""

    def __init__(self, dest: Path, editor: Editor, model: Any, mode: str) -> None:
        self.root = dest / STATE
        self.editor, self.model, self.mode = editor, model, mode

    def save(self, st: Any) -> None:
        import torch
        from safetensors.torch import save

        tmp = self.root / f".tmp-{st.done}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        progress = {"done": st.done, "seconds": st.seconds, "retention": st.retention}
        _write_bytes_synced(tmp / "progress.json", json.dumps(progress).encode())
        state = {"editor": self.editor.state_dict(), "torch_rng": torch.get_rng_state()}
        with open(tmp / "editor.pt", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if self.mode == "sequential" and st.deltas:
            params = dict(self.model.named_parameters())
            now = {k: params[k].detach().cpu().contiguous() for k in st.deltas}
            _write_bytes_synced(tmp / "params.safetensors", save(now))
            _write_bytes_synced(
                tmp / "deltas.safetensors", save({k: v.cpu().contiguous() for k, v in st.deltas.items()})
            )
        fault_point("edit:state")
        final = self.root / str(st.done)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(self.root / "latest", str(st.done))
        for old in self.root.iterdir():
            if old.is_dir() and old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, rows_path: Path) -> Any:
        """The ProtocolState of the newest complete state (the model's edited parameters, the editor's
        state and the torch RNG restored), or a fresh one when no group had finished."""
        import torch
        from safetensors.torch import load_file

        from lifelong.editing.protocol import ProtocolState

        done = _done_so_far(self.root.parent)
        for other in self.root.iterdir() if self.root.exists() else []:  # a group saved after `latest` last moved
            if other.is_dir() and other.name != str(done):
                shutil.rmtree(other, ignore_errors=True)
        if done == 0:
            if rows_path.exists():
                atomic_write_text(rows_path, "")
            return ProtocolState()
        folder = self.root / str(done)
        progress = json.loads((folder / "progress.json").read_text())
        st = ProtocolState(done=done, seconds=progress["seconds"], retention=progress["retention"])
        st.rows = read_rows(rows_path, done)
        if (folder / "params.safetensors").exists():
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for k, v in load_file(str(folder / "params.safetensors")).items():
                    params[k].copy_(v)
            deltas = load_file(str(folder / "deltas.safetensors"))
            st.deltas = {k: v.to(params[k].device) for k, v in deltas.items()}
        saved = torch.load(folder / "editor.pt", weights_only=True)
        self.editor.load_state_dict(saved["editor"], self.model)
        torch.set_rng_state(saved["torch_rng"])
        return st


def _save_dir_atomically(dest: Path, name: str, write: Any) -> None:
    """`write(folder)` into a temporary folder, then renamed to dest/name (an older one replaced)."""
    tmp = dest / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    shutil.rmtree(dest / name, ignore_errors=True)
    os.replace(tmp, dest / name)


def edit_to_dir(
    requests_path: str,
    model: str,
    method: str,
    out: str,
    overrides: list[str] | None = None,
    protocol: str = "sequential",
    group: Optional[int] = None,
    every: Optional[int] = None,
    fluency_tokens: int = 0,
    seed: int = 0,
    resume: bool = False,
    quiet: bool = False,
    console: Optional[Any] = None,
) -> dict:
    """Run `lifelong edit`: returns what metrics.json holds (`summary`, `not_converged`, ...)."""
    import torch

    from lifelong.editing.common import weights_fingerprint
    from lifelong.editing.metrics import predictions
    from lifelong.editing.protocol import run_protocol
    from lifelong.models import load_model_and_tokenizer
    from lifelong.models.threads import set_torch_threads

    dest = Path(out)
    requests = load_requests(requests_path)
    editor = build(method, overrides)
    if group is None:
        group = len(requests) if editor.batched else 1
    settings = {
        "method": method,
        "params": editor.params.model_dump(mode="json"),
        "protocol": protocol,
        "group": group,
        "every": every,
        "fluency_tokens": fluency_tokens,
        "seed": seed,
        "requests_file": str(requests_path),
        "model": model,
    }
    hashes = {
        "requests": _sha(Path(requests_path).read_bytes()),
        "params": _sha(json.dumps(settings["params"], sort_keys=True).encode()),
    }
    run = check_out(dest, resume, settings, hashes)  # before the model loads
    torch.manual_seed(seed)
    mdl, tok = load_model_and_tokenizer(model_config(model), seed=seed)
    set_torch_threads(mdl)  # OMP_NUM_THREADS, else by model size (lifelong.models.threads)
    mdl.eval()
    hashes["model"] = weights_fingerprint(mdl, lambda name: False)
    rows_path, state_root = dest / ROWS, dest / STATE
    if run is not None:
        if run.get("hashes", {}).get("model") != hashes["model"]:
            raise ValueError(
                f"{dest} holds an interrupted run on another model (its weights differ from those of --model "
                f"{model}; the run used {run.get('settings', {}).get('model')}); resume with the same model, or "
                "choose another --out"
            )
        remove_stale_temporaries(dest)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            dest / RUN_FILE,
            {
                "status": "running",
                "requests": len(requests),
                "settings": settings,
                "hashes": hashes,
                "resumable": resumable(editor, protocol),
            },
        )
        state_root.mkdir(exist_ok=True)
    if (state_root / "pre.json").exists():
        pre = json.loads((state_root / "pre.json").read_text())
    else:
        with torch.no_grad():
            pre = predictions(mdl, tok, requests)
        state_root.mkdir(exist_ok=True)
        atomic_write_json(state_root / "pre.json", pre)
    writer = StateWriter(dest, editor, mdl, protocol)
    state = writer.load(rows_path)

    def on_group(st: Any, rows: list[dict], res: Any) -> None:
        append_rows(rows_path, rows)
        fault_point("edit:group")
        writer.save(st)

    res = run_protocol(
        mdl,
        tok,
        editor,
        requests,
        protocol,  # type: ignore[arg-type]
        group,
        every,
        fluency_tokens,
        seed=seed,
        quiet=quiet,
        console=console,
        pre=pre,
        state=state,
        on_group=on_group,
        keep_results=False,
    )
    return finish(dest, res, requests, editor, mdl, tok, settings, hashes)


def finish(
    dest: Path, res: dict, requests: list, editor: Editor, mdl: Any, tok: Any, settings: dict, hashes: dict
) -> dict:
    """The final files, each written atomically; then run.json says "finished" and the state goes."""
    import torch
    from safetensors.torch import save_file

    from lifelong.editing.metrics import table

    method, protocol, group = settings["method"], settings["protocol"], settings["group"]
    written = protocol == "sequential" and editor.changes_weights
    keep = {"method", "mode", "group", "requests", "summary", "immediate", "retention", "seconds_per_group"}
    meta: dict[str, Any] = {k: res[k] for k in keep}
    meta["seconds_total"] = res["seconds_total"]
    meta.update(
        model=settings["model"],
        params=settings["params"],
        requests_file=settings["requests_file"],
        hashes=hashes,
        not_converged=len(res["not_converged"]),
        not_converged_edits=res["not_converged"],
        convergence_recorded=res["convergence_recorded"],
        model_written=written,
    )
    if protocol == "sequential":
        atomic_write_text(
            dest / "final_per_request.jsonl",
            "".join(
                json.dumps({"index": i, "id": r.id, "subject": r.subject, "target_new": r.target_new, **m}) + "\n"
                for i, (r, m) in enumerate(zip(requests, res["per_request"]))
            ),
        )
    if written:
        deltas = res["deltas"]
        tmp = dest / f".deltas.safetensors.tmp{os.getpid()}"
        save_file(
            {k: v.contiguous() for k, v in deltas.items()},
            str(tmp),
            metadata={"method": method, "edits": str(len(requests))},
        )
        os.replace(tmp, dest / "deltas.safetensors")

        def save_model(folder: Path) -> None:
            mdl.save_pretrained(str(folder), safe_serialization=True)
            tok.save_pretrained(str(folder))

        _save_dir_atomically(dest, "model", save_model)
    elif protocol == "sequential":
        state = editor.state_dict()
        if state:  # the edits themselves (GRACE's codebook): load with Editor.load_state_dict
            tmp = dest / f".editor_state.pt.tmp{os.getpid()}"
            torch.save(state, tmp)
            os.replace(tmp, dest / "editor_state.pt")
    why = (
        ""
        if written
        else "\n\nNo model written: "
        + (
            "each edit was undone after scoring (rollback)."
            if protocol == "rollback"
            else f"{method} keeps its edits outside the weights"
            + (" (they are in editor_state.pt)." if (dest / "editor_state.pt").exists() else ".")
        )
    )
    md = f"# {method} on {len(requests)} edits ({protocol}, group {group})\n\n" + table(res["summary"])
    if protocol == "sequential" and res["immediate"]:
        md += "\n\nRight after each edit (per_request.jsonl):\n\n" + table(res["immediate"])
    md += "\n\n" + convergence_line(res, method) + why + "\n"
    atomic_write_json(dest / "metrics.json", meta)
    atomic_write_text(dest / "metrics.md", md)
    run = read_run(dest) or {}
    atomic_write_json(dest / RUN_FILE, dict(run, status="finished"))
    shutil.rmtree(dest / STATE, ignore_errors=True)
    return meta


def convergence_line(res: dict, method: str) -> str:
    """The summary's line about edits whose optimisation did not reach its goal."""
    bad, n = res["not_converged"], res["requests"]
    if not res["convergence_recorded"]:
        return f"Convergence: {method} records none."
    if not bad:
        return f"Not converged: 0 of {n} edits."
    shown = ", ".join(
        f"{b['id'] if b['id'] is not None else b['subject']} ({b['what']} {b['loss']:.3g} > {b['threshold']:.3g})"
        for b in bad[:20]
    )
    more = f", and {len(bad) - 20} more (metrics.json)" if len(bad) > 20 else ""
    return f"Not converged: {len(bad)} of {n} edits (final loss above the threshold): {shown}{more}."
