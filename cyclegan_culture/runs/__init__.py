"""The run folder (checkpoints/NAME/): weight files per epoch, the training state, safe loading (checkpoint.py),
the one-writer lock (lock.py), and what a fresh run may find there (guard.py). Engine, inference and eval read
and write runs only through here."""
