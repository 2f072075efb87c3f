"""Expert trajectories for MTT: training farm outputs and their checksummed store."""
