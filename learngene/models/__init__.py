"""Where models come from: what a loaded model is and the files it is read from (`loading`),
the one reference resolver (`refs`: embedded[:TESTBED], local-dir, POOL:MEMBER, a timm name),
the embedded testbeds' ancestors (`embedded`: shipped weights, per-recipe caches) and ancestors
fitted to a user's classes (`fitted`, with the raw-pixel baselines each fit is reported
against). Modules are imported by name."""
