"""Drop-in integrations with RL trainers; each module imports its trainer only when imported."""
