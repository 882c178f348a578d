"""The pool on disk: a folder a user can copy, inspect and trust.

    pool.json                     manifest (format, ancestor, recipe, instances, components, metrics,
                                  revisions)
    instances/<aux>.b<i>.safetensors   one learngene instance (a transformer block) per file
    components/<aux>.embed|head|maps.safetensors  embeddings, final norm + head, trained W maps
    revisions/r<N>/               what `assemble` trained: stitches.safetensors, and the instances /
                                  components it fine-tuned (same names as above). The distilled
                                  originals are revision r0 and are never overwritten.

Only safetensors, never pickle. Every file's sha256 is in the manifest; opening a pool
re-hashes them and refuses one that does not match, naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from learngene.ancestry import file_sha256
from learngene.paths import staged_folder
from learngene.errors import UserError

FORMAT = "learngene-pool"
FORMAT_VERSION = 1
MANIFEST = "pool.json"


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write a safetensors file via temp + rename; return its sha256."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    return file_sha256(path)


def split_model(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """A timm ViT's state dict cut into pool pieces: 'embed', 'b<i>' per block, 'head'."""
    pieces: dict[str, dict[str, torch.Tensor]] = {"embed": {}, "head": {}}
    for k, v in model.state_dict().items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            pieces.setdefault(f"b{int(i)}", {})[rest] = v
        elif k.startswith(("patch_embed.", "cls_token", "pos_embed", "reg_token", "norm_pre.")):
            pieces["embed"][k] = v
        else:  # norm, fc_norm, head
            pieces["head"][k] = v
    return pieces


def join_pieces(pieces: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    sd = {}
    for name, tensors in pieces.items():
        for k, v in tensors.items():
            sd[f"blocks.{int(name[1:])}.{k}" if name.startswith("b") and name[1:].isdigit() else k] = v
    return sd


@dataclass
class Pool:
    """An opened pool: the manifest plus lazy access to its tensors."""

    path: Path
    manifest: dict

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Pool":
        p = Path(path).expanduser()
        mf = p / MANIFEST
        if not p.is_dir():
            raise UserError(f"pool not found: {p}")
        if not mf.is_file():
            raise UserError(f"not a pool (no {MANIFEST}): {p}")
        try:
            manifest = json.loads(mf.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"corrupt manifest {mf}: {e.msg} at line {e.lineno}") from None
        if manifest.get("format") != FORMAT:
            raise UserError(f"{mf} is not a learngene pool manifest")
        if manifest.get("version", 0) > FORMAT_VERSION:
            raise UserError(f"{mf} has format version {manifest['version']}; this learngene reads up to {FORMAT_VERSION}")
        pool = cls(p, manifest)
        if verify:
            pool.verify()
        return pool

    def files(self) -> list[dict]:
        out = list(self.manifest["instances"]) + list(self.manifest["components"])
        for rev in self.revisions:
            out += rev["files"]
        return out

    def verify(self) -> int:
        """Re-hash every file; raise naming the first one that is missing or altered."""
        for entry in self.files():
            f = self.path / entry["file"]
            if not f.is_file():
                raise UserError(f"pool file missing: {f}")
            if file_sha256(f) != entry["sha256"]:
                raise UserError(f"pool file fails its checksum (altered or corrupt): {f}")
        return len(self.files())

    # -- reading ---------------------------------------------------------------------------
    @property
    def instances(self) -> list[dict]:
        return self.manifest["instances"]

    @property
    def auxiliary(self) -> dict:
        return self.manifest["auxiliary"]

    def tensors(self, file: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path / file))
        except Exception as e:
            raise UserError(f"cannot read pool file {self.path / file}: {type(e).__name__}") from None

    # -- revisions (written by assemble) -----------------------------------------------------
    @property
    def revisions(self) -> list[dict]:
        return self.manifest.get("revisions", [])

    def revision(self, rid: str | None = "latest") -> dict | None:
        """A revision's record; None for the distilled originals ('r0', or 'latest' when
        nothing was assembled yet)."""
        if rid in (None, "r0") or (rid == "latest" and not self.revisions):
            return None
        if rid == "latest":
            return self.revisions[-1]
        for r in self.revisions:
            if r["id"] == rid:
                return r
        have = ", ".join(["r0", *(r["id"] for r in self.revisions)])
        raise UserError(f"pool {self.path} has no revision {rid} (has: {have})")

    def _entry(self, piece: str, rid: str | None) -> dict | None:
        """The file holding `piece` ('narrow.b0', 'wide.head', 'stitches') as of revision
        `rid`: the newest revision up to it that rewrote the piece, else the original."""
        chain = []
        rev = self.revision(rid)
        while rev is not None:
            chain.append(rev)
            rev = self.revision(rev.get("parent"))
        for rev in chain:
            for e in rev["files"]:
                if e["id"] == piece:
                    return e
        for e in self.manifest["instances"] + self.manifest["components"]:
            if e["id"] == piece:
                return e
        return None

    def piece(self, piece: str, revision: str | None = None) -> dict[str, torch.Tensor]:
        e = self._entry(piece, revision)
        if e is None:
            raise UserError(f"pool {self.path} has no {piece}")
        return self.tensors(e["file"])

    def has_piece(self, piece: str, revision: str | None = None) -> bool:
        return self._entry(piece, revision) is not None

    def instance(self, aux: str, block: int, revision: str | None = None) -> dict[str, torch.Tensor]:
        return self.piece(f"{aux}.b{block}", revision)

    def component(self, aux: str, kind: str, revision: str | None = None) -> dict[str, torch.Tensor]:
        return self.piece(f"{aux}.{kind}", revision)

    def aux_model(self, aux: str, revision: str | None = None) -> nn.Module:
        """Rebuild an auxiliary model (a plain timm ViT) from its instances and components,
        as of a revision (None: as distilled)."""
        import timm

        if aux not in self.auxiliary:
            raise UserError(f"pool {self.path} has no auxiliary model {aux!r} (has: {', '.join(self.auxiliary)})")
        meta = self.auxiliary[aux]
        model = timm.create_model(meta["architecture"], **meta["model_args"])
        pieces = {"embed": self.component(aux, "embed", revision), "head": self.component(aux, "head", revision)}
        for b in range(meta["model_args"]["depth"]):
            pieces[f"b{b}"] = self.instance(aux, b, revision)
        model.load_state_dict(join_pieces(pieces), strict=True)
        return model.eval()

    def add_revision(self, files: dict[str, tuple[dict, dict[str, torch.Tensor]]], record: dict) -> dict:
        """Write a new revision: ``files`` maps a file name inside the revision folder to
        (entry fields, tensors). The folder is staged and renamed into place, then the
        manifest is rewritten atomically; earlier revisions and the originals are untouched."""
        root = self.path / "revisions"
        root.mkdir(exist_ok=True)
        taken = {r["id"] for r in self.revisions} | {p.name for p in root.iterdir()}
        n = 1
        while f"r{n}" in taken:
            n += 1
        rid = f"r{n}"
        entries = []
        with staged_folder(root / rid) as stage:
            for name, (fields, tensors) in files.items():
                sha = save_tensors_atomic(stage / name, tensors)
                entries.append({**fields, "file": f"revisions/{rid}/{name}", "sha256": sha,
                                "params": sum(v.numel() for v in tensors.values())})
        rec = {"id": rid, **record, "files": entries}
        manifest = json.loads(json.dumps(self.manifest))
        manifest.setdefault("revisions", []).append(rec)
        write_json_atomic(self.path / MANIFEST, manifest)
        self.manifest = manifest
        return rec

    def stored_params(self) -> int:
        return sum(e["params"] for e in self.files())

    def info_rows(self) -> list[dict]:
        return [
            {k: e[k] for k in ("id", "source", "width", "heads", "block", "params", "file")}
            for e in self.instances
        ]


def write_aux(stage: Path, aux: str, model: nn.Module, maps: dict[str, torch.Tensor], spec_meta: dict) -> dict:
    """Write one finished auxiliary model's instances and components into the staging folder
    and return its manifest fragment (also saved there, so a resumed build keeps it)."""
    from learngene.vit import ViTView

    shape = ViTView(model).shape
    instances, components = [], []
    for name, tensors in split_model(model).items():
        params = sum(v.numel() for v in tensors.values())
        if name.startswith("b") and name[1:].isdigit():
            file = f"instances/{aux}.{name}.safetensors"
            instances.append({
                "id": f"{aux}.{name}", "source": aux, "width": shape.embed_dim, "heads": shape.num_heads,
                "block": int(name[1:]), "file": file, "sha256": save_tensors_atomic(stage / file, tensors), "params": params,
            })
        else:
            file = f"components/{aux}.{name}.safetensors"
            components.append({"id": f"{aux}.{name}", "source": aux, "kind": name, "file": file,
                               "sha256": save_tensors_atomic(stage / file, tensors), "params": params})
    file = f"components/{aux}.maps.safetensors"
    components.append({"id": f"{aux}.maps", "source": aux, "kind": "maps", "file": file,
                       "sha256": save_tensors_atomic(stage / file, maps), "params": sum(v.numel() for v in maps.values())})
    instances.sort(key=lambda e: e["block"])
    fragment = {"aux": spec_meta, "instances": instances, "components": components}
    write_json_atomic(stage / f"{aux}.done.json", fragment)
    return fragment


def finalize(stage: Path, out: Path, manifest: dict, force: bool) -> Path:
    """Write the manifest last, then move the staged folder into place in one rename."""
    for leftover in list(stage.glob("*.done.json")) + [stage / "checkpoints"]:
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    write_json_atomic(stage / MANIFEST, manifest)
    old = None
    if out.exists():
        if not force:
            raise UserError(f"pool exists: {out} (pass --force to replace it)")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
