"""Demo singers with ground truth (synthetic recordings built from a real face photo).

Naming (the Snakefile relies on it through :func:`demo_rows`): subjects ``singer1..N``, songs
``song1..M``, every singer sings every song once: take ``singer<i>_song<j>``.
"""
from __future__ import annotations


def demo_rows(subjects: int, songs: int) -> list[dict]:
    """Rows of the demo sample sheet (paths relative to the demo folder)."""
    rows = []
    for i in range(1, subjects + 1):
        for j in range(1, songs + 1):
            take = f"singer{i}_song{j}"
            rows.append({"take": take, "subject": f"singer{i}",
                         "video": f"singer{i}/{take}.mp4", "song": f"songs/song{j}.wav"})
    return rows
