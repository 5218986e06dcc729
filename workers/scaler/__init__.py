"""The scaler: starts workers on local processes, SLURM or HTCondor when there is a backlog."""
