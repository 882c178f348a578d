"""A pool's upkeep: its files re-hashed and checked finite, what killed writers left (listed or
removed), revisions no one needs dropped (gc), and what it stores (params, bytes, instances)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from learngene.core.errors import UserError
from learngene.core.io import (
    file_sha256,
    is_live,
    nonfinite,
    staged_folder,
    write_json_atomic,
)
from learngene.pool.schema import FORMAT, FORMAT_VERSION, MANIFEST, SUBDIRS, validate  # noqa: F401  (FORMAT*: the writers' too)


class PoolUpkeep:
    """Mixed into `Pool` (learngene.pool.store): the methods that check, clean and count a pool."""

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

    def copy_as_distilled(self, dst: str | os.PathLike):
        """A copy of the pool as build-pool wrote it: instances, components and the
        manifest without revisions (no children, reports or adapters either)."""
        dst = Path(dst)
        with staged_folder(dst) as stage:
            for e in self.manifest["instances"] + self.manifest["components"]:
                (stage / e["file"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.path / e["file"], stage / e["file"])
            write_json_atomic(stage / MANIFEST, {**self.manifest, "revisions": []})
        return type(self).open(dst)

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
