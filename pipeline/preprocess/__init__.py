"""Preprocessing: the contract (`config.PreprocessConfig`, stored with datasets and
checkpoints), the transforms and default chain (`transforms`), the head mask of a processed
volume (`head`) and the cache of processed volumes (`cache`)."""
