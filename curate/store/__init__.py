"""The LMDB sample store: record codec, environments, the Store, datasets, file arrays, export, verify."""
