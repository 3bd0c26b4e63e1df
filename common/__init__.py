"""What every layer shares and none owns: typed errors, the config-table check, the torch device, atomic file
writes and the split names. Imports nothing of diffcurate's other layers."""
