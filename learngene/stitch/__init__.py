"""Stitched models: which descendants two equal-depth ViTs give (`descendants`), the stitched
descendant itself and the shared-weight `PoolModel` (`stitched`), stitch initialisation
(`init`) and their joint training (`joint`). Used by the pool's assemble, by SN-Net, by the
zoo and by `Pool.model`. Modules are imported by name (timm registers `stitched` on import)."""
