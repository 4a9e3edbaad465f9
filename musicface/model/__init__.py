"""The MusicFace model: TSAE (encoder), ATM (atm), EGN/PGN/ESGN (generators), discriminator, and the
whole generator with its variants (musicface)."""
from musicface.model.discriminator import Discriminator
from musicface.model.musicface import MusicFace, count_parameters, export, load_checkpoint

__all__ = ["MusicFace", "Discriminator", "load_checkpoint", "export", "count_parameters"]
