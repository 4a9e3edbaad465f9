"""MusicFace: music-driven expressive singing face synthesis (model, training, evaluation)."""
__version__ = "0.1.0"
