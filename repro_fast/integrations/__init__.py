"""Drop-in integrations with RL trainers. Each lives in its own module and imports its trainer
only when that module is imported (``repro_fast.integrations.trl`` needs ``repro-fast[trl]``)."""
