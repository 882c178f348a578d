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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.core.io import (
    file_sha256,
    inside,
    load_tensors,
    real_folder,
    save_tensors,
    staged_folder,
    write_json_atomic,
)
from learngene.core.localdir import read_json
from learngene.core.processes import is_locked, lock
from learngene.core.vit import join_pieces
from learngene.pool.schema import (  # noqa: F401  (FORMAT*, MANIFEST: the writers' too)
    FORMAT,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    SUBDIRS,
    validate,
)
from learngene.pool.upkeep import PoolUpkeep


@dataclass(frozen=True)
class Revision:
    """A state of the pool's weights: ``r0`` is the distilled originals (no record), every
    other is a record `assemble` wrote (parent, files, what was trained, its descendant table)."""

    id: str = "r0"
    record: dict | None = None

    @classmethod
    def of(cls, record: dict | None) -> Revision:
        return cls("r0", None) if record is None else cls(record["id"], record)

    @property
    def parent(self) -> str | None:
        return None if self.record is None else self.record.get("parent")

    @property
    def original(self) -> bool:
        return self.record is None


@dataclass
class Pool(PoolUpkeep):
    """An opened pool: the manifest plus lazy access to its tensors."""

    path: Path
    manifest: dict

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> Pool:
        p = Path(path).expanduser()
        mf = p / MANIFEST
        if not p.is_dir():
            raise UserError(f"pool not found: {p}")
        if not mf.is_file():
            raise UserError(f"not a pool (no {MANIFEST}): {p}")
        pool = cls(p, cls._read(p))
        if verify:
            pool.verify()
        return pool

    @staticmethod
    def _read(path: Path) -> dict:
        mf = path / MANIFEST
        return validate(read_json(mf, "manifest"), mf)

    @contextmanager
    def writing(self, what: str = "", wait: bool = True):
        """The pool's lock, held while a writer reads, changes and rewrites pool.json (and
        puts its files in place): a second writer waits (or, ``wait=False``, is refused in
        one line), and nothing it recorded is lost. The manifest is re-read under the lock.
        Re-entrant within one Pool object."""
        if getattr(self, "_held", 0):  # this process holds it already (assemble around its revision and child)
            self._held += 1
            try:
                yield self
            finally:
                self._held -= 1
            return
        with lock(self.path / LOCK, f"pool {self.path}{what}", wait=wait):
            self._held = 1
            try:
                self.manifest = self._read(self.path)
                yield self
            finally:
                self._held = 0

    def folder(self, name: str) -> Path:
        """A folder of the pool learngene writes into (refused when it is a symlink out)."""
        return real_folder(self.path / name, f"pool folder {name}/")

    def file(self, rel: str) -> Path:
        """A file named by the manifest, confined to the pool."""
        return inside(self.path, rel, "pool file")

    def files(self) -> list[dict]:
        out = list(self.manifest["instances"]) + list(self.manifest["components"])
        for rev in self.revisions:
            out += rev["files"]
        return out

    def check_writable(self) -> None:
        for name in ("", "revisions", "children"):
            d = self.folder(name) if name else self.path
            if d.exists() and not os.access(d, os.W_OK):
                raise UserError(f"pool folder {d} is not writable: nothing can be recorded there")

    def busy(self) -> bool:
        return is_locked(self.path / LOCK)

    # -- reading ---------------------------------------------------------------------------
    @property
    def instances(self) -> list[dict]:
        return self.manifest["instances"]

    @property
    def auxiliary(self) -> dict:
        return self.manifest["auxiliary"]

    def tensors(self, file: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.file(file))

    # -- what the pool was made from -----------------------------------------------------------
    @property
    def ancestor(self) -> dict:
        """The ancestor's record: name, source, sha256, params, shape, data_config, test_top1."""
        return dict(self.manifest["ancestor"])

    @property
    def data_config(self) -> dict:
        """The timm data config of the ancestor, which every member of the pool reads."""
        return dict(self.manifest["ancestor"]["data_config"])

    @property
    def data(self):
        """The fingerprint of the data the pool was distilled on (a dict; a string in pools
        built before fingerprints held the classes)."""
        return self.manifest.get("data")

    @property
    def embedded_data(self) -> str | None:
        """The embedded source the pool was distilled on (``digits``, ``animals``), None for a folder."""
        from learngene.core.data import is_embedded

        src = self.data.get("source") if isinstance(self.data, dict) else None
        return src if src and is_embedded(src) else None

    def manifest_sha256(self) -> str:
        return file_sha256(self.path / MANIFEST)

    # -- the two auxiliary models ----------------------------------------------------------------
    @property
    def aux_names(self) -> tuple[str, str]:
        """(narrow, wide): the pool's two auxiliary models, by width."""
        aux = self.auxiliary
        if len(aux) != 2:
            raise UserError(
                f"pool {self.path} has {len(aux)} auxiliary models; stitching needs exactly two (narrow and wide)"
            )
        a, b = sorted(aux, key=lambda n: aux[n]["model_args"]["embed_dim"])
        if aux[a]["model_args"]["depth"] != aux[b]["model_args"]["depth"]:
            raise UserError(f"pool {self.path}: {a} and {b} differ in depth; stitching needs equal depths")
        return a, b

    def aux_args(self, aux: str) -> dict:
        return dict(self.auxiliary[aux]["model_args"])

    @property
    def depth(self) -> int:
        return self.aux_args(self.aux_names[0])["depth"]

    @property
    def num_classes(self) -> int:
        return self.aux_args(self.aux_names[1])["num_classes"]

    def distill_maps(self) -> tuple:
        """(narrow W maps, wide W maps, narrow pairs, wide pairs): what `distill` stitch init reads."""
        n, w = self.aux_names
        return (
            self.component(n, "maps"),
            self.component(w, "maps"),
            self.auxiliary[n]["pairs"],
            self.auxiliary[w]["pairs"],
        )

    # -- folders beside the manifest -------------------------------------------------------------
    @property
    def children_dir(self) -> Path:
        return self.path / "children"

    @property
    def reports_dir(self) -> Path:
        return self.path / "reports"

    @property
    def adapters_dir(self) -> Path:
        return self.path / "adapters"

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

    def head(self, rid: str | None = "latest") -> Revision:
        """The revision ``rid`` names (``latest``: the newest; the originals are ``r0``)."""
        return Revision.of(self.revision(rid))

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
        model = timm.create_model(meta["architecture"], pretrained=False, **meta["model_args"])
        pieces = {"embed": self.component(aux, "embed", revision), "head": self.component(aux, "head", revision)}
        for b in range(meta["model_args"]["depth"]):
            pieces[f"b{b}"] = self.instance(aux, b, revision)
        model.load_state_dict(join_pieces(pieces), strict=True)
        return model.eval()

    def trained_ids(self, rev: dict | None) -> set[str]:
        """Descendants trained in a revision or its ancestors (the auxiliary models were
        trained by distillation)."""
        done, restitched = {"narrow", "wide"}, set()
        while rev is not None:
            done |= set(rev.get("trained", [])) - restitched
            restitched |= set(rev.get("restitched", []))  # older training was of another stitch
            rev = self.revision(rev.get("parent"))
        return done

    def accuracy(self, rev: dict | None) -> dict[str, dict]:
        """{descendant id: val_top1 / test_top1 / test_top5 / init_val_top1} as a revision measured them."""
        keys = ("val_top1", "test_top1", "test_top5", "init_val_top1")
        return {d["id"]: {k: d.get(k) for k in keys} for d in (rev or {}).get("descendants", [])}

    def model(self, revision: str | None = "latest"):
        """(PoolModel, has_stitches): every descendant on shared weights as of a revision;
        has_stitches is False when no revision holds trained stitches yet (they are then
        fresh, for the caller to initialise)."""
        from learngene.stitch.stitched import PoolModel, unflatten_stitches

        n, w = self.aux_names
        rev = self.revision(revision)
        rid = (rev or {}).get("id")
        has = self.has_piece("stitches", rid)
        stitches = unflatten_stitches(self.piece("stitches", rid)) if has else {}
        kinds = {}
        while rev is not None and not kinds:  # the newest record of the stitch kinds
            kinds = rev.get("stitch_kinds", {})
            rev = self.revision(rev.get("parent"))
        pm = PoolModel(
            self.aux_model(n, rid),
            self.aux_model(w, rid),
            self.aux_args(n),
            self.aux_args(w),
            stitches=stitches,
            aux_arch=self.auxiliary[n]["architecture"],
            kinds=kinds,
            aux_names=(n, w),
        )
        return pm, has

    def add_revision(self, files: dict[str, tuple[dict, dict[str, torch.Tensor]]], record: dict) -> dict:
        """Write a new revision: ``files`` maps a file name inside the revision folder to
        (entry fields, tensors). The folder is staged and renamed into place, then the
        manifest is rewritten atomically; earlier revisions and the originals are untouched.
        Under the pool's lock: two assembles at once each get their own revision."""
        with self.writing(" (a revision)"):
            root = self.folder("revisions")
            root.mkdir(exist_ok=True)
            taken = {r["id"] for r in self.revisions} | {p.name for p in root.iterdir()}
            n = 1
            while f"r{n}" in taken:
                n += 1
            rid = f"r{n}"
            entries = []
            parent = record.get("parent")
            with staged_folder(root / rid) as stage:
                for name, (fields, tensors) in files.items():
                    sha = save_tensors(stage / name, tensors)
                    before = self._entry(fields["id"], parent)
                    if before is not None and before["sha256"] == sha:
                        # unchanged by this run (a block the trained descendants do not use): the
                        # revision refers to the parent's file through its chain, nothing is stored twice
                        (stage / name).unlink()
                        continue
                    entries.append(
                        {
                            **fields,
                            "file": f"revisions/{rid}/{name}",
                            "sha256": sha,
                            "params": sum(v.numel() for v in tensors.values()),
                        }
                    )
            rec = {"id": rid, **record, "files": entries}
            manifest = json.loads(json.dumps(self.manifest))
            manifest.setdefault("revisions", []).append(rec)
            write_json_atomic(self.path / MANIFEST, manifest)
            self.manifest = manifest
        return rec
