"""The MPA stages, each a flat `run(cfg, rundir)` reading and writing files in the run directory."""
