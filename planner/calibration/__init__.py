"""`plan calibrate`: measure this machine's device and links with torch (all ranks at once, as in
training) and write a device profile file that `--gpu FILE` plans with."""
