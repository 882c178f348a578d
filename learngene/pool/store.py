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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from learngene.core.errors import UserError
from learngene.core.io import (
    file_sha256,
    inside,
    is_live,
    load_tensors,
    nonfinite,
    real_folder,
    save_tensors,
    staged_folder,
    write_json_atomic,
)
from learngene.core.localdir import read_json
from learngene.core.processes import is_locked, lock
from learngene.core.vit import join_pieces
from learngene.pool.schema import FORMAT, FORMAT_VERSION, validate  # noqa: F401  (FORMAT*: the writers' too)

MANIFEST = "pool.json"
LOCK = ".lock"
SUBDIRS = ("instances", "components", "revisions", "children", "reports", "adapters")


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
class Pool:
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

    def verify(self, finite: bool = False) -> int:
        """Re-hash every file; raise naming the first one that is missing or altered (and,
        with ``finite``, holds NaN or inf)."""
        for entry in self.files():
            f = self.file(entry["file"])
            if not f.is_file() or f.is_symlink():
                raise UserError(f"pool file missing: {f}")
            if file_sha256(f) != entry["sha256"]:
                raise UserError(f"pool file fails its checksum (altered or corrupt): {f}")
            if finite:
                bad = nonfinite(self.tensors(entry["file"]))
                if bad:
                    raise UserError(f"pool file holds {bad[1]} non-finite value(s) (NaN/inf) in {bad[0]}: {f}")
        return len(self.files())

    def leftovers(self) -> list[Path]:
        """What interrupted writers left (staging folders, temp files, revision folders the
        manifest does not list): every reader ignores them; `pool verify --clean` removes them."""

        def stale(p: Path) -> bool:  # hidden, not a lock (locks belong to live writers), not being written now
            return p.name.startswith(".") and not p.name.endswith(".lock") and not is_live(p)

        out = [p for p in self.path.iterdir() if stale(p)]
        for sub in SUBDIRS:
            d = self.path / sub
            if d.is_dir() and not d.is_symlink():
                out += [p for p in d.iterdir() if stale(p)]
        revs = self.path / "revisions"
        if revs.is_dir() and not revs.is_symlink():
            # a revision folder nothing refers to (a revision `pool gc` folded away still holds
            # files a later revision reads)
            used = {e["file"].split("/")[1] for e in self.files() if e["file"].startswith("revisions/")}
            out += [p for p in revs.iterdir() if not p.name.startswith(".") and p.name not in used]
        return sorted(out)

    def clean(self) -> list[Path]:
        """Remove the leftovers (refused while another writer holds the pool)."""
        with self.writing(" (cleaning)", wait=False):
            gone = self.leftovers()
            for p in gone:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return gone

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

    def referenced_revisions(self) -> dict[str, list[str]]:
        """{revision: what refers to it}: exported children and reports name the revision they
        were made from."""
        refs: dict[str, list[str]] = {}
        for sub, name, key in (
            ("children", "config.json", ("learngene", "pool_revision")),
            ("reports", "frontier.json", ("meta", "revision")),
        ):
            d = self.path / sub
            for f in sorted(d.glob(f"*/{name}")) if d.is_dir() else []:
                if f.parent.name.startswith("."):
                    continue
                try:
                    v = json.loads(f.read_text())
                    v = v.get(key[0], {}).get(key[1])
                except (OSError, ValueError, AttributeError, RecursionError):
                    continue
                if isinstance(v, str):
                    refs.setdefault(v, []).append(f"{sub}/{f.parent.name}")
        return refs

    def gc(self, keep=(), dry_run: bool = False) -> dict:
        """Drop the revisions that are neither the latest, nor in ``keep``, nor named by a child
        or a report, folding what a later revision still reads of them into it; then delete
        every file no remaining revision (or r0) refers to, and the leftovers of killed runs.
        Under the pool's lock. Returns what was (with ``dry_run``: would be) removed."""
        with self.writing(" (gc)", wait=False):
            manifest = json.loads(json.dumps(self.manifest))
            revs = manifest.get("revisions", [])
            known = {r["id"] for r in revs}
            bad = [k for k in keep if k not in known and k != "r0"]
            if bad:
                raise UserError(f"pool {self.path} has no revision {bad[0]} to keep (has: {', '.join(['r0', *known])})")
            refs = self.referenced_revisions()
            kept = set(keep) | set(refs) | ({revs[-1]["id"]} if revs else set())
            dropped = [r["id"] for r in revs if r["id"] not in kept]
            by_id = {r["id"]: r for r in revs}
            for rid in dropped:
                d = by_id[rid]
                for r in revs:
                    if r.get("parent") != rid:
                        continue
                    have = {e["id"] for e in r["files"]}
                    r["files"] += [e for e in d["files"] if e["id"] not in have]
                    restitched = set(r.get("restitched", []))
                    r["trained"] = sorted(set(r.get("trained", [])) | (set(d.get("trained", [])) - restitched))
                    r["restitched"] = sorted(restitched | set(d.get("restitched", [])))
                    r.setdefault("folded", []).append(rid)
                    r["parent"] = d.get("parent")
            manifest["revisions"] = [r for r in revs if r["id"] not in dropped]
            used = {e["file"] for e in manifest["instances"] + manifest["components"]}
            used |= {e["file"] for r in manifest["revisions"] for e in r["files"]}
            stored = {e["file"] for e in self.files()}
            gone_files = sorted(stored - used)
            leftovers = self.leftovers()
            freed = sum(self.file(f).stat().st_size for f in gone_files if self.file(f).is_file())
            if not dry_run:
                validate(manifest, self.path / MANIFEST)
                write_json_atomic(self.path / MANIFEST, manifest)
                self.manifest = manifest
                for f in gone_files:
                    self.file(f).unlink(missing_ok=True)
                for rid in dropped:
                    folder = self.path / "revisions" / rid
                    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
                        shutil.rmtree(folder)
                for p in leftovers:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return {
            "revisions": dropped,
            "files": gone_files,
            "leftovers": [str(p.relative_to(self.path)) for p in leftovers],
            "bytes": freed,
            "kept": sorted(kept),
            "referenced": refs,
        }

    def copy_as_distilled(self, dst: str | os.PathLike) -> Pool:
        """A copy of the pool as build-pool wrote it: instances, components and the
        manifest without revisions (no children, reports or adapters either)."""
        dst = Path(dst)
        with staged_folder(dst) as stage:
            for e in self.manifest["instances"] + self.manifest["components"]:
                (stage / e["file"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.path / e["file"], stage / e["file"])
            write_json_atomic(stage / MANIFEST, {**self.manifest, "revisions": []})
        return Pool.open(dst)

    def stored_params(self) -> int:
        """Parameters stored on disk, each file once."""
        return sum(e["params"] for e in {e["file"]: e for e in self.files()}.values())

    def pieces(self, revision: str | None = "latest") -> dict[str, dict]:
        """{piece id: the entry of the file that holds it} as of a revision: what loading that
        revision reads."""
        ids = {e["id"] for e in self.manifest["instances"] + self.manifest["components"]}
        chain, rev = [], self.revision(revision)
        while rev is not None:
            chain.append(rev)
            ids |= {e["id"] for e in rev["files"]}
            rev = self.revision(rev.get("parent"))
        rid = chain[0]["id"] if chain else None
        return {i: self._entry(i, rid) for i in sorted(ids)}

    def storage(self) -> dict:
        """Bytes on disk (every file once) and the bytes each revision needs (r0 included)."""

        def size(e) -> int:
            f = self.file(e["file"])
            return f.stat().st_size if f.is_file() else 0

        unique = {e["file"]: e for e in self.files()}
        per = {"r0": sum(size(e) for e in self.pieces("r0").values())}
        for r in self.revisions:
            per[r["id"]] = sum(size(e) for e in self.pieces(r["id"]).values())
        return {"bytes_on_disk": sum(size(e) for e in unique.values()), "files": len(unique), "revision_bytes": per}

    def info_rows(self) -> list[dict]:
        return [
            {k: e[k] for k in ("id", "source", "width", "heads", "block", "params", "file")} for e in self.instances
        ]
