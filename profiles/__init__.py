"""Hardware data (TOML): device profiles in `gpus/`, node and fabric presets in `clusters/`.

A package only so that a non-editable install ships the files; read them with `importlib.resources`.
Every number in these files carries its source in a comment.
"""
