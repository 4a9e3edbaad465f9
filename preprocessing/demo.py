"""Demo singers with ground truth (synthetic recordings built from a real face photo).

Naming (the Snakefile relies on it through :func:`demo_rows`): subjects ``singer1..N``, songs
``song1..M``, every singer sings every song once: take ``singer<i>_song<j>``.

What :func:`generate` writes into ``out`` (the same form as a user's raw recordings, plus truth):

* ``songs/song<j>.wav`` - the mix that was played: 44.1 kHz mono float32. A steady beat
  (kick/snare/hat), bass and chords, an instrumental intro, gaps and an outro, and a sung melody
  (source-filter voice: harmonic glottal source with vibrato through vowel formants, consonant
  noise).
* ``songs/song<j>.stems/vocals.wav`` and ``music.wav`` - the true stems; ``mix == vocals + music``
  exactly (float32), same rate and length.
* ``songs/song<j>.truth.npz`` - ``sr``, ``tempo_bpm``, ``beat_times`` (s), ``vocal_activity``
  (u1 at 100 Hz: row r is 1 when song time r/100 s lies inside a sung syllable),
  ``mouth_open_100hz``, ``music_energy_100hz`` (music stem loudness, 0..1), ``syllables`` (K, 3) =
  onset s, offset s, pitch Hz, ``vowels`` (K,) str, ``sustained`` (K,) u1 (phrase-final long notes),
  ``key_hz``, ``sections`` (S, 2) start/end s with ``section_labels`` (S,) in intro/verse/gap/outro.
* ``singer<i>/singer<i>_song<j>.mp4`` - 640x480, 30 fps constant, H.264 yuv420p + AAC mono 48 kHz
  "camera" audio (the song as heard in the room: delayed, with gain, a little reverb and noise).
* ``singer<i>/singer<i>_song<j>.truth.npz`` - per video frame (N frames): ``pose`` (N, 6) f4,
  ``mouth_open``, ``eye_closure`` (N,) f4 in [0, 1], ``long_mask``, ``blink_mask``,
  ``vocal_activity`` (N,) u1, ``events`` (K, 4) f4 (start frame, end frame exclusive, duration s,
  kind 0 blink / 1 long, as in ``eyes.npz``), ``blink_events_s`` / ``long_events_s`` (K, 2) closed
  intervals in video seconds, ``music_energy`` and ``head_speed`` (N,) (what drove the head),
  scalars ``offset_s``, ``fps``, ``n_frames``, ``frame_size`` (W, H), and ``style_*`` (the singer).
* ``samples.tsv`` - take, subject, video, song; written last, so its presence means "complete".

Conventions (docs/data.md): video frame i is at video time i/30 s; ``offset_s`` is the song time
of frame 0 (``song_time = video_time + offset_s``). The camera starts d ~ U(0.2, 3.0) s before the
song, so ``offset_s = -d`` (d is a whole number of 48 kHz samples).

Pose (truth ``pose`` columns ``pitch, yaw, roll, tx, ty, tz``) follows the dataset's convention
(:mod:`preprocessing.coeffs`, both backends), so truth and ``coeffs.npz`` / shard poses correlate
positively, column by column. Camera frame x to the image right, y UP, z TOWARD the camera; the head
rotation about the face centre is ``R = Rz(roll) Ry(yaw) Rx(pitch)``, angles in radians, 0 =
frontal: pitch > 0 nods the chin down, yaw > 0 turns the face toward the image's right, roll > 0
turns it counter-clockwise on screen (the eye line's image angle ``atan2(-dy, dx)`` with image y
down, left-of-image eye to right-of-image eye, equals roll when pitch = yaw = 0). The face has depth
relief, so yaw and pitch show parallax as on a real head.

Translation: ``tx, ty, tz`` = displacement of the head from its rest position, in units of the
nominal camera-to-face distance D (the face centre rests at depth D, on the optical axis
horizontally and ``FACE_OUT[1] - FRAME_H / 2`` = 48 px below it), x right, y UP, ``tz > 0`` = closer
to the camera. The signs are ``coeffs``'; the units are not. With f = ``FOCAL_PX`` = 700 px and
H = 480 px, the face centre appears at (image heights from the image centre, y up, as ``coeffs``'
tx, ty) ``x = (f / H) tx / (1 - tz)``, ``y = (f / H) (ty - 48 / f) / (1 - tz)`` and its size scales
by ``1 / (1 - tz)``, so ``coeffs``' ``tx ~ 1.46 tx + cx``, ``ty ~ 1.46 ty + cy`` and
``tz ~ -ln(1 - tz) + cz ~ tz + cz`` (cx, cy, cz: constants of the take, since ``coeffs``' face
origin and reference size are not the demo's face centre and photo size).

The renderer (:class:`FaceRenderer`) works in OpenCV camera axes (y down, z away), where the same
rotation and translation read ``(pitch, -yaw, -roll, tx, -ty, -tz)`` (conjugating by
diag(1, -1, -1) keeps Rx and flips Ry and Rz); :func:`take_truth` returns the pose in those render
axes and :func:`dataset_pose` converts it when the truth is written.

Head *speed* follows the music (loudness x beat pulses), its *direction* turns at random on beats
(paper Fig. 4); each singer has a style (amplitudes, speed, blink ranges, face size, tint, mirror),
stored in the take's truth as ``style_*``.

"Closed" eyes: ``blink_mask`` / ``long_mask`` are 1 where ``eye_closure >= 0.5`` inside a blink /
a long closure; a closure's duration is the time it spends at or above 0.5. Blinks are shorter
than 0.5 s, long closures (on sustained notes) at least 0.5 s (paper tau).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocessing.common import atomic_path, save_npz
from preprocessing.timebase import FPS

# scipy, cv2, av, skimage are imported inside the functions that use them: the Snakefile imports
# this module for demo_rows() on every run and should not pay for them.

SONG_SR = 44100                   # songs and stems (what a user's music files usually are)
CAM_SR = 48000                    # camera audio; CAM_SR / FPS = 1600 samples per frame exactly
FRAME_W, FRAME_H = 640, 480
FOCAL_PX = 700.0                  # pinhole focal length of the demo camera (pixels)
BLINK_INTERVAL = (1.2, 2.0)       # s, blink start to next blink start (paper 3.3.3)
BLINK_DURATION = (0.10, 0.45)     # s, time the eye spends closed (>= 0.5) during a blink
LONG_MIN = 0.5                    # s, paper tau: closures at least this long are long closures
MAX_ANGLE = 0.25                  # rad, every pose angle stays within +-MAX_ANGLE
DELAY_RANGE = (0.2, 3.0)          # s, camera starts this long before the song
# render pose (OpenCV axes: y down, z away) -> dataset pose (coeffs: y up, z toward the camera):
# pitch, yaw, roll, tx, ty, tz -> pitch, -yaw, -roll, tx, -ty, -tz (its own inverse)
RENDER_TO_DATASET = np.array([1, -1, -1, 1, -1, -1], np.float32)


def demo_rows(subjects: int, songs: int) -> list[dict]:
    """Rows of the demo sample sheet (paths relative to the demo folder)."""
    rows = []
    for i in range(1, subjects + 1):
        for j in range(1, songs + 1):
            take = f"singer{i}_song{j}"
            rows.append({"take": take, "subject": f"singer{i}",
                         "video": f"singer{i}/{take}.mp4", "song": f"songs/song{j}.wav"})
    return rows


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent, reproducible stream per (seed, purpose, index...)."""
    return np.random.default_rng([seed, *key])


# ============================================================================================= song
# Vowel formants (F1, F2, F3 in Hz, roughly an adult female voice) and how wide each opens the
# mouth.
VOWELS = {
    "a": ((850, 1220, 2810), 1.00),
    "o": ((560, 920, 2830), 0.80),
    "e": ((610, 2330, 2990), 0.70),
    "u": ((370, 950, 2670), 0.45),
    "i": ((310, 2790, 3310), 0.40),
}
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
PROGRESSIONS = [(0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4)]   # scale degrees per bar


@dataclass
class Song:
    """One synthetic song: stems at SONG_SR and its score (all times in seconds of song time)."""
    sr: int
    seconds: float
    tempo_bpm: float
    key_hz: float                          # tonic of the (major) key
    progression: tuple                     # chord per bar, as scale degrees of the key
    beat_times: np.ndarray                 # (B,) s
    syllables: np.ndarray                  # (K, 3) onset s, offset s, pitch Hz
    vowels: list[str]
    sustained: np.ndarray                  # (K,) bool: phrase-final long notes
    sections: list[tuple[str, float, float]]
    vocals: np.ndarray = field(repr=False, default=None)
    music: np.ndarray = field(repr=False, default=None)
    energy_100hz: np.ndarray = field(repr=False, default=None)   # music loudness, 0..1

    @property
    def mix(self) -> np.ndarray:
        return self.vocals + self.music

    def mouth_open(self, t: np.ndarray) -> np.ndarray:
        """Mouth opening 0..1 at song times ``t`` (s): vowel width x syllable envelope; 0 outside
        syllables."""
        return syllable_envelope(self.syllables, t) * self._openness(t)

    def active(self, t: np.ndarray) -> np.ndarray:
        """1 where ``t`` lies inside a sung syllable [onset, offset)."""
        k = self._index(t)
        return ((k >= 0) & (t < self.syllables[np.maximum(k, 0), 1])).astype(np.uint8)

    def _index(self, t):
        return np.searchsorted(self.syllables[:, 0], t, side="right") - 1

    def _openness(self, t):
        k = np.maximum(self._index(t), 0)
        return np.array([VOWELS[v][1] for v in self.vowels])[k]


def syllable_envelope(syl: np.ndarray, t: np.ndarray, attack: float = 0.06, release: float = 0.08):
    """Raised-cosine envelope of each syllable at times ``t``: 0 at onset/offset, 1 in between."""
    t = np.asarray(t, dtype=np.float64)
    k = np.searchsorted(syl[:, 0], t, side="right") - 1
    on, off = syl[np.maximum(k, 0), 0], syl[np.maximum(k, 0), 1]
    length = off - on
    a = np.minimum(attack, length / 3)
    r = np.minimum(release, length / 3)
    tau = t - on
    env = np.ones_like(t)
    env = np.where(tau < a, np.sin(0.5 * np.pi * np.clip(tau / a, 0, 1)) ** 2, env)
    env = np.where(tau > length - r,
                   np.sin(0.5 * np.pi * np.clip((length - tau) / r, 0, 1)) ** 2, env)
    return np.where((k >= 0) & (tau < length), env, 0.0)


def compose_song(seed: int, j: int, seconds: float) -> Song:
    """Score of song ``j``: tempo, key, section layout and a melody of syllables (no audio yet).

    Layout in 4-beat bars on a beat grid starting at t = 0: an instrumental intro, verses of phrases
    (each phrase ends on a sustained note followed by a breath rest) separated by instrumental gap
    bars, and an instrumental outro that runs to the end of the song.
    """
    rng = _rng(seed, 1, j)
    # tempi spread over 84..132 bpm with golden-ratio steps, so any two songs differ clearly
    tempo = 84.0 + 48.0 * ((_rng(seed, 0).uniform() + 0.618034 * (j - 1)) % 1.0)
    beat = 60.0 / tempo
    beat_times = np.arange(0.0, seconds - 1e-9, beat)
    n_beats = seconds / beat
    intro_beats = outro_beats = gap_beats = 4 if seconds >= 16 else 2   # shorter for short songs
    root_hz = 196.0 * 2 ** (rng.integers(0, 9) / 12)           # key: G3..D#4 tonic
    sections, syllables, vowels, sustained = [("intro", 0.0, intro_beats * beat)], [], [], []
    # position / last sung beat, in beats
    b, end = intro_beats, n_beats - outro_beats
    degree = int(rng.integers(0, 5))                            # melody: scale degree random walk
    while True:
        first = len(sections) == 1
        room = int((end - b - (0 if first else gap_beats) + 1e-9) // 4)   # whole bars left to sing
        if room < 1:
            break
        if not first:
            # instrumental between verses
            sections.append(("gap", b * beat, (b + gap_beats) * beat))
            b += gap_beats
        # verse of 2-3 bars, shorter if that leaves room for a gap and one more verse bar
        n_bars = int(min(rng.integers(2, 4), room, max(1, (end - b - gap_beats - 4 + 1e-9) // 4)))
        start = b
        for bar in range(n_bars):                               # one phrase per bar
            total = 8 - int(rng.integers(1, 3))                 # leave a breath rest of 1-2 eighths
            final = int(rng.choice([2, 3, 4, 4]))               # phrase-final (sustained) note
            lengths = []
            while sum(lengths) < total - final:
                lengths.append(int(min(rng.choice([1, 1, 1, 2]), total - final - sum(lengths))))
            lengths.append(final)
            eighths = 0
            for i, n in enumerate(lengths):
                on = (b + bar * 4 + eighths / 2) * beat
                off = on + n * beat / 2 - rng.uniform(0.02, 0.05)
                degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), -3, 7))
                semis = 12 * (degree // 7) + MAJOR[degree % 7]
                syllables.append((on, off, root_hz * 2 ** (semis / 12)))
                vowels.append(str(rng.choice(list(VOWELS))))
                sustained.append(i == len(lengths) - 1)
                eighths += n
        b += 4 * n_bars
        sections.append(("verse", start * beat, b * beat))
    sections.append(("outro", b * beat, seconds))
    return Song(sr=SONG_SR, seconds=seconds, tempo_bpm=tempo, key_hz=root_hz,
                progression=PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))],
                beat_times=beat_times,
                syllables=np.array(syllables, dtype=np.float64).reshape(-1, 3), vowels=vowels,
                sustained=np.array(sustained, dtype=bool), sections=sections)


def write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    """Atomic float32 mono WAV with byte-identical output for identical audio.

    Not common.save_wav: libsndfile adds a PEAK chunk holding the current time to float WAVs,
    so two runs differ in the header; scipy's writer stores the samples and nothing else.
    """
    from scipy.io import wavfile

    with atomic_path(path) as tmp:
        wavfile.write(tmp, int(sr), np.asarray(audio, dtype=np.float32))


def _decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (sr * tau))


def _bandpass(x: np.ndarray, lo: float, hi: float, sr: int) -> np.ndarray:
    from scipy import signal

    sos = signal.butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def synth_music(song: Song, rng: np.random.Generator) -> np.ndarray:
    """Accompaniment: kick (beats 1, 3), snare (2, 4), hi-hat (eighths), bass (quarters), chord pad.

    Intro and outro are quieter (no kick in the intro's first half, outro fades), which gives the
    music an energy curve that the head motion follows.
    """
    from scipy import signal

    sr, n = song.sr, int(round(song.seconds * song.sr))
    out = np.zeros(n + sr)                                       # +1 s tail, cut at the end
    beat = 60.0 / song.tempo_bpm
    key_hz, prog = song.key_hz / 2, song.progression            # chords an octave under the tune
    # one-shot drum sounds
    kl = int(0.35 * sr)
    tk = np.arange(kl) / sr
    kick = np.sin(2 * np.pi * np.cumsum(45 + 105 * np.exp(-tk / 0.03)) / sr) * _decay(kl, sr, 0.12)
    sl = int(0.2 * sr)
    snare = (_bandpass(rng.standard_normal(sl), 1000, 6000, sr) * _decay(sl, sr, 0.05)
             + 0.5 * np.sin(2 * np.pi * 185 * np.arange(sl) / sr) * _decay(sl, sr, 0.06))
    hl = int(0.06 * sr)
    hat = signal.sosfilt(signal.butter(2, 7000, "highpass", fs=sr, output="sos"),
                         rng.standard_normal(hl)) * _decay(hl, sr, 0.015)

    def place(x, t, gain):
        i = int(round(t * sr))
        m = min(len(x), len(out) - i)
        if m > 0:
            out[i:i + m] += gain * x[:m]

    intro_end = song.sections[0][2]
    for bi, t in enumerate(song.beat_times):
        pos = bi % 4
        if pos in (0, 2) and not (t < intro_end / 2):
            place(kick, t, 0.9)
        if pos in (1, 3):
            place(snare, t, 0.35 if t >= intro_end else 0.2)
        place(hat, t, 0.12)
        place(hat, t + beat / 2, 0.07)
    # bass (quarters) and chord pad (whole bars), following the progression
    t_all = np.arange(len(out)) / sr
    bar = 4 * beat
    for bar_i in range(int(np.ceil(song.seconds / bar)) + 1):
        deg = prog[bar_i % len(prog)]
        chord = [deg, deg + 2, deg + 4]
        hz = [key_hz * 2 ** ((12 * (d // 7) + MAJOR[d % 7]) / 12) for d in chord]
        t0 = bar_i * bar
        i0, i1 = int(t0 * sr), min(int((t0 + bar) * sr), len(out))
        if i0 >= len(out):
            break
        tt = t_all[i0:i1] - t0
        pad_env = np.minimum(1, tt / 0.08) * np.minimum(1, (bar - tt) / 0.05)
        for f in hz:
            for h in range(1, 5):
                out[i0:i1] += 0.035 / h * pad_env * np.sin(2 * np.pi * f * h * tt)
        fb = hz[0] / 4
        for q in range(4):
            tq = tt - q * beat
            on = (tq >= 0) & (tq < beat)
            env = np.where(on, np.exp(-np.clip(tq, 0, None) / 0.25)
                           * np.minimum(1, np.clip(tq, 0, None) / 0.005), 0)
            for h in range(1, 7):
                out[i0:i1] += 0.16 / h * env * np.sin(2 * np.pi * fb * h * tq)
    out = out[:n]
    # outro fade over its length, short fade-in at the very start
    outro_start = song.sections[-1][1]
    t = np.arange(n) / sr
    fade = np.clip(1 - (t - outro_start) / max(song.seconds - outro_start, 1e-3) * 0.8, 0.2, 1)
    return out * fade * np.minimum(1, t / 0.01)


def synth_vocals(song: Song, rng: np.random.Generator) -> np.ndarray:
    """Sung melody, source-filter style, one syllable at a time.

    Source: harmonics k*f0(t) with a -6 dB/octave tilt (glottal pulse train), f0 with an onset glide
    and 5.5 Hz vibrato; filter: the vowel's three formant resonances, evaluated per harmonic
    (additive synthesis is exact and needs no IIR state). A band-passed noise burst (consonant)
    starts most syllables. Amplitude = the same envelope as the mouth opening.
    """
    sr, n = song.sr, int(round(song.seconds * song.sr))
    out = np.zeros(n)
    for k, (on, off, f_note) in enumerate(song.syllables):
        i0, i1 = int(round(on * sr)), min(int(round(off * sr)), n)
        t = np.arange(i0, i1) / sr
        tau = t - on
        cents = (-60 * np.exp(-tau / 0.03)
                 + 35 * np.clip((tau - 0.15) / 0.2, 0, 1) * np.sin(2 * np.pi * 5.5 * tau
                                                                   + rng.uniform(0, 6.28)))
        f0 = f_note * 2 ** (cents / 1200)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        formants, _ = VOWELS[song.vowels[k]]
        voice = np.zeros_like(t)
        for h in range(1, int(7000 // f_note) + 1):
            fh = h * f_note
            gain = 1.0 / h
            for F, B in zip(formants, (90, 110, 160)):
                gain *= 1 / np.sqrt((1 - (fh / F) ** 2) ** 2 + (fh * B / F ** 2) ** 2)
            voice += gain * np.sin(h * phase)
        voice *= syllable_envelope(song.syllables[k:k + 1], t)
        voice /= np.max(np.abs(voice)) + 1e-9
        if rng.random() < 0.7:                                   # consonant burst at the onset
            m = min(int(rng.uniform(0.02, 0.045) * sr), len(t))
            lo = rng.uniform(1500, 3500)
            burst = _bandpass(rng.standard_normal(m), lo, min(lo * 2.5, 9000), sr) * np.hanning(m)
            voice[:m] += 0.25 * burst / (np.max(np.abs(burst)) + 1e-9)
        out[i0:i1] += voice * rng.uniform(0.8, 1.0)
    return out


def render_song(seed: int, j: int, seconds: float) -> Song:
    """Score + audio of song ``j``; stems scaled so the vocals sit ~3 dB under the music, peak
    0.9."""
    song = compose_song(seed, j, seconds)
    rng = _rng(seed, 2, j)
    music, vocals = synth_music(song, rng), synth_vocals(song, rng)

    def rms(x):
        return np.sqrt(np.mean(x[np.abs(x) > 1e-4] ** 2)) if np.any(np.abs(x) > 1e-4) else 1.0

    vocals *= rms(music) / rms(vocals)
    peak = np.max(np.abs(vocals + music))
    song.vocals = (vocals * 0.9 / peak).astype(np.float32)
    song.music = (music * 0.9 / peak).astype(np.float32)
    # music loudness at 100 Hz (50 ms RMS), 0..1 - drives the head's speed
    hop = song.sr // 100
    frames = len(song.music) // hop
    e = np.sqrt(np.convolve(song.music[:frames * hop].astype(np.float64) ** 2,
                            np.ones(hop * 5) / (hop * 5), mode="same")[::hop][:frames])
    song.energy_100hz = (e / (e.max() + 1e-9)).astype(np.float32)
    return song


def song_truth(song: Song) -> dict:
    """Arrays of songs/song<j>.truth.npz."""
    n100 = int(np.ceil(song.seconds * 100))
    t100 = np.arange(n100) / 100
    return dict(
        sr=np.int32(song.sr), seconds=np.float64(song.seconds),
        tempo_bpm=np.float64(song.tempo_bpm), beat_times=song.beat_times.astype(np.float64),
        vocal_activity=song.active(t100), mouth_open_100hz=song.mouth_open(t100).astype(np.float32),
        music_energy_100hz=np.pad(song.energy_100hz, (0, n100 - len(song.energy_100hz)),
                                  mode="edge")[:n100],
        syllables=song.syllables.astype(np.float64), vowels=np.array(song.vowels, dtype="U1"),
        sustained=song.sustained.astype(np.uint8),
        sections=np.array([(a, b) for _, a, b in song.sections], dtype=np.float64),
        section_labels=np.array([s for s, _, _ in song.sections], dtype="U5"),
    )


# ========================================================================================== singers
@dataclass
class Style:
    """A demo singer's personal style (what the one-hot subject code lets the model learn)."""
    index: int
    face_scale: float            # canvas pixels per photo pixel (face size on screen)
    mirror: bool                 # the photo is mirrored for this singer
    tint: tuple                  # RGB gains applied to the photo
    amp: tuple                   # bound of |pitch|, |yaw|, |roll| (rad)
    trans: tuple                 # bound of |tx|, |ty|, |tz| (units of the camera distance)
    speed: float                 # head speed (rad/s) at full music energy, on the beat
    turn_prob: float             # probability that the head picks a new direction on a beat
    blink_interval: tuple        # s, this singer's range (inside BLINK_INTERVAL)
    blink_duration: tuple        # s, this singer's range (inside BLINK_DURATION)
    long_prob: float             # probability of closing the eyes on a long sustained note
    mouth_px: float              # lip gap in canvas pixels at mouth_open = 1

    def arrays(self) -> dict:
        """The style as truth arrays (prefixed ``style_``)."""
        return {f"style_{k}": np.asarray(v, dtype=np.float32) for k, v in self.__dict__.items()}


def subject_style(seed: int, i: int) -> Style:
    """Style of singer ``i`` (1-based). A golden-ratio sequence spreads the singers over the
    calm <-> lively axis so any two differ clearly; the rest is drawn at random."""
    rng = _rng(seed, 3, i)
    u = (0.1 + 0.2 * _rng(seed, 4).uniform() + 0.618034 * (i - 1)) % 1.0   # 0 = calm, 1 = lively
    return Style(
        index=i,
        face_scale=float(rng.uniform(2.05, 2.35)),
        mirror=bool(i % 2 == 0),
        tint=tuple(float(g) for g in 1 + rng.uniform(-0.08, 0.08, 3)),
        amp=(0.05 + 0.04 * u, 0.10 + 0.08 * u, 0.19 + 0.04 * u),
        trans=(0.01 + 0.02 * u, 0.01 + 0.01 * u, 0.02 + 0.04 * u),
        speed=0.30 + 0.35 * u,
        turn_prob=float(rng.uniform(0.2, 0.5)),
        blink_interval=(1.2 + 0.3 * (1 - u), 1.6 + 0.4 * (1 - u)),
        blink_duration=(0.10 + 0.12 * u, 0.26 + 0.19 * u),
        long_prob=0.4 + 0.5 * u,
        mouth_px=float(rng.uniform(0.12, 0.15)) * 106 * 2.2,      # 106 px = photo face height
    )


def _ramp(x):
    """Smooth step: 0 for x <= -1, 0.5 at 0, 1 for x >= 1."""
    return 0.5 + 0.5 * np.sin(0.5 * np.pi * np.clip(x, -1, 1))


def closure_curve(t: np.ndarray, events: list[tuple[float, float]], edge: float) -> np.ndarray:
    """Eye closure 0..1 at times t: each event (t0, t1) is >= 0.5 exactly on [t0, t1],
    closing/opening over +-``edge`` s around t0/t1 (1 in the middle when t1 - t0 > 2 edge)."""
    c = np.zeros_like(t)
    for t0, t1 in events:
        c = np.maximum(c, np.minimum(_ramp((t - t0) / edge), _ramp((t1 - t) / edge)))
    return c


def _walk(speed: np.ndarray, turn: np.ndarray, bounds: np.ndarray, rng) -> np.ndarray:
    """Paper Fig. 4 head motion: p_t = p_{t-1} + s_t d_t with speed s_t given per frame and a unit
    direction d_t that turns to a new random direction where ``turn`` is set, eased over ~3 frames.
    A component that reaches its bound turns back (reflection), which keeps |p| <= bounds."""
    dim = len(bounds)
    p = np.zeros((len(speed), dim))
    target = rng.standard_normal(dim)
    target /= np.linalg.norm(target)
    d, cur = target.copy(), np.zeros(dim)
    for i in range(len(speed)):
        if turn[i]:
            target = rng.standard_normal(dim)
            target /= np.linalg.norm(target)
        d = d + 0.35 * (target - d)
        d /= np.linalg.norm(d) + 1e-12
        step = speed[i] / FPS * d * bounds / bounds.max()
        out = np.abs(cur + step) > bounds
        if out.any():                                            # reflect at the walls
            target[out] = -np.sign(cur[out]) * np.abs(target[out])
            d[out] = -np.sign(cur[out]) * np.abs(d[out])
            step = speed[i] / FPS * d * bounds / bounds.max()
        cur = np.clip(cur + step, -bounds, bounds)
        p[i] = cur
    return p


def take_truth(song: Song, style: Style, seed: int, delay_s: float, n: int) -> dict:
    """Per-frame truth of one take: what the singer does at video frame i (song time i/FPS - delay).

    ``pose`` here is in the renderer's OpenCV axes; :func:`generate` writes :func:`dataset_pose` of
    it."""
    from scipy.ndimage import gaussian_filter1d

    rng = _rng(seed, 5, style.index, int(round(song.seconds * 1000)), int(round(delay_s * CAM_SR)))
    tv = np.arange(n) / FPS
    ts = tv - delay_s
    mouth = song.mouth_open(ts).astype(np.float32)
    vocal = song.active(ts)
    # long closures on some long sustained notes (at least one per take), blinks in between
    syl = song.syllables
    cand = [k for k in range(len(syl)) if song.sustained[k] and syl[k, 1] - syl[k, 0] >= 0.62]
    longs = [k for k in cand if rng.random() < style.long_prob]
    if not longs and len(syl):
        longs = ([cand[int(rng.integers(len(cand)))]] if cand
                 else [int(np.argmax(syl[:, 1] - syl[:, 0]))])
    long_ev = []
    for k in longs:
        a = syl[k, 0] + 0.08 + delay_s
        long_ev.append((a, max(syl[k, 1] - 0.02 + delay_s, a + 0.55)))
    blink_ev = []
    lo, hi = style.blink_interval
    t = rng.uniform(0.2, hi)
    while True:
        dur = rng.uniform(*style.blink_duration)
        if t + dur > tv[-1] - 0.2:
            break
        hit = [b for a, b in long_ev if t < b + 0.3 and a - 0.3 < t + dur]
        if hit:
            t = max(hit) + rng.uniform(lo, hi) * 0.5                # restart after the long closure
            continue
        blink_ev.append((t, t + dur))
        t += rng.uniform(lo, hi)
    eye = closure_curve(tv, long_ev, 0.08)
    eye = np.maximum(eye, closure_curve(tv, blink_ev, 0.04)).astype(np.float32)
    closed = eye >= 0.5
    in_long = np.zeros(n, bool)
    for a, b in long_ev:
        in_long |= (tv >= a - 0.1) & (tv <= b + 0.1)
    long_mask = (closed & in_long).astype(np.uint8)
    blink_mask = (closed & ~in_long).astype(np.uint8)
    events = []
    for kind, evs in ((0, blink_ev), (1, long_ev)):
        for a, b in evs:
            idx = np.flatnonzero(closed & (tv >= a - 0.1) & (tv <= b + 0.1))
            if len(idx):
                events.append((idx[0], idx[-1] + 1, b - a, kind))
    events = np.array(sorted(events), dtype=np.float32).reshape(-1, 4)
    # head motion: speed from the music's loudness and beat, direction turns at random on beats
    in_song = (ts >= 0) & (ts < song.seconds)
    energy = np.where(in_song,
                      song.energy_100hz[np.clip((ts * 100).astype(int), 0,
                                                len(song.energy_100hz) - 1)], 0)
    k = np.searchsorted(song.beat_times, ts, side="right") - 1
    since = ts - song.beat_times[np.maximum(k, 0)]
    pulse = np.where(in_song & (k >= 0), np.exp(-since / 0.15), 0)
    speed = style.speed * (0.15 + energy) * (0.4 + pulse)
    beat_now = np.zeros(n, bool)
    beat_now[1:] = (k[1:] != k[:-1]) & in_song[1:]
    turn = (beat_now & (rng.random(n) < style.turn_prob)) | (~in_song & (rng.random(n) < 1.0 / FPS))
    ang = _walk(speed, turn, np.array(style.amp), rng)
    trans = _walk(speed * 0.15, turn, np.array(style.trans), rng)
    pose = gaussian_filter1d(np.concatenate([ang, trans], 1), 1.0, axis=0,
                             mode="nearest").astype(np.float32)
    return dict(pose=pose, mouth_open=mouth, eye_closure=eye, long_mask=long_mask,
                blink_mask=blink_mask, vocal_activity=vocal, events=events,
                offset_s=np.float64(-delay_s), fps=np.int32(FPS), n_frames=np.int32(n),
                frame_size=np.array([FRAME_W, FRAME_H], np.int32),
                blink_events_s=np.array(blink_ev, np.float64).reshape(-1, 2),
                long_events_s=np.array(long_ev, np.float64).reshape(-1, 2),
                music_energy=energy.astype(np.float32), head_speed=speed.astype(np.float32),
                **style.arrays())


def dataset_pose(render_pose: np.ndarray) -> np.ndarray:
    """Pose ``(..., 6)`` in the renderer's OpenCV axes -> the dataset convention of the truth file
    (module docstring): yaw, roll, ty, tz change sign (exact in float32; the map is its own
    inverse)."""
    return (np.asarray(render_pose, np.float32) * RENDER_TO_DATASET).astype(np.float32)


# ======================================================================================== rendering
# Landmarks of skimage.data.astronaut() (photo pixels), measured once with MediaPipe FaceMesh
# (static image, refine_landmarks=True); index lists are FaceMesh's.
# 33 246 161 160 159 158 157 173 133
_EYE_L_UP = [(195.2, 100.9), (196.1, 100.1), (197.2, 99.2), (199.4, 98.1), (202.8, 97.6),
             (206.3, 98.1), (209.7, 99.9), (212.2, 102.3), (213.3, 103.7)]
# 33 7 163 144 145 153 154 155 133
_EYE_L_LO = [(195.2, 100.9), (196.5, 102.2), (197.9, 103.0), (200.1, 103.8), (203.4, 104.3),
             (206.8, 104.3), (210.1, 104.0), (212.2, 103.9), (213.3, 103.7)]
# 362 398 384 385 386 387 388 466 263
_EYE_R_UP = [(237.0, 104.9), (238.4, 103.7), (241.2, 101.6), (244.7, 100.0), (248.3, 99.7),
             (251.9, 100.6), (253.9, 102.1), (255.0, 103.2), (255.8, 104.3)]
# 362 382 381 380 374 373 390 249 263
_EYE_R_LO = [(237.0, 104.9), (238.0, 105.3), (240.2, 105.6), (243.3, 106.2), (246.6, 106.7),
             (250.0, 106.6), (252.5, 106.1), (254.2, 105.4), (255.8, 104.3)]
# 78 .. 13 .. 308
_LIP_IN_UP = [(203.3, 139.9), (205.9, 140.1), (209.1, 140.7), (212.9, 141.5), (217.6, 142.4),
              (223.5, 143.2), (229.4, 142.9), (234.1, 142.3), (237.8, 141.8), (240.9, 141.6),
              (243.4, 141.5)]
# 78 .. 14 .. 308
_LIP_IN_LO = [(203.3, 139.9), (206.4, 143.2), (209.0, 145.5), (212.6, 147.7), (217.3, 149.3),
              (223.0, 150.1), (228.6, 149.7), (233.3, 148.5), (237.1, 146.6), (239.9, 144.6),
              (243.4, 141.5)]
_CHIN = (221.3, 177.4)                                                 # 152
_FOREHEAD = (226.3, 71.7)                                              # 10
_FACE_L, _FACE_R = (179.4, 110.0), (270.2, 115.5)                      # 234, 454 (face oval sides)
_NOSE_BRIDGE, _NOSE_TIP = (224.8, 103.5), (223.4, 130.0)              # 168 (approx.), 1
CANVAS_W, CANVAS_H = 1000, 840                                         # canonical (frontal) canvas
FACE_OUT = (320.0, 288.0)     # face centre in the frame at rest: eyes level with the optical axis


class FaceRenderer:
    """Renders a singer's frame from (pose, mouth_open, eye_closure).

    The photo is first mapped once, by a similarity (scale, level eyes, optional mirror), to a
    frontal "canvas" where the face centre sits at the canvas centre. Per frame: (1) the mouth opens
    by a smooth local warp that moves the lower lip and jaw down and paints the mouth interior in
    the gap; (2) skin-coloured upper eyelids with a dark lash edge are drawn over the eyes down to
    ``eye_closure`` of the eye height; (3) the head pose: the canvas is a face with depth relief
    (rounded oval + nose ridge) rotated by R(pitch, yaw, roll) about the face centre, translated by
    (tx, ty, tz) and seen by a pinhole camera (focal FOCAL_PX), so turning the head shows parallax
    (the nose moves against the cheeks) as a real head does. cv2 remap does the pixels.
    """

    def __init__(self, style: Style):
        import cv2
        from skimage.data import astronaut

        self.cv2, self.style = cv2, style
        eye_l, eye_r = np.mean(_EYE_L_UP + _EYE_L_LO, 0), np.mean(_EYE_R_UP + _EYE_R_LO, 0)
        mouth = np.mean(_LIP_IN_UP + _LIP_IN_LO, 0)
        centre = ((eye_l + eye_r) / 2 + mouth) / 2
        ang = np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])    # level the eye line
        s = style.face_scale
        c, si = np.cos(-ang) * s, np.sin(-ang) * s
        A = np.array([[c, -si], [si, c]])
        if style.mirror:
            A = np.diag([-1.0, 1.0]) @ A
        self.M = np.hstack([A, (np.array([CANVAS_W / 2, CANVAS_H / 2]) - A @ centre)[:, None]])
        photo = astronaut().astype(np.float32) * np.array(style.tint, np.float32)
        self.canvas = cv2.warpAffine(np.clip(photo, 0, 255).astype(np.uint8), self.M,
                                     (CANVAS_W, CANVAS_H), flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REFLECT101)

        def tf(pts):
            return np.asarray(pts, np.float64) @ self.M[:, :2].T + self.M[:, 2]

        # eyes: upper/lower lid curves as functions of canvas x, and the lid skin colour
        self.eyes = []
        for up, lo in ((_EYE_L_UP, _EYE_L_LO), (_EYE_R_UP, _EYE_R_LO)):
            up, lo = tf(up), tf(lo)
            up, lo = up[np.argsort(up[:, 0])], lo[np.argsort(lo[:, 0])]
            x0, x1 = int(np.floor(up[0, 0])) - 2, int(np.ceil(up[-1, 0])) + 3
            xs = np.arange(x0, x1, dtype=np.float64)
            yu = np.interp(xs, up[:, 0], up[:, 1])
            yl = np.interp(xs, lo[:, 0], lo[:, 1])
            h = (yl - yu).max()
            y0 = int(np.floor(yu.min() - 0.6 * h)) - 3
            patch = self.canvas[int(yu.min() - 1.2 * h):int(yu.min() - 0.5 * h),
                                int(xs[len(xs) // 4]):int(xs[3 * len(xs) // 4])]
            skin = patch.reshape(-1, 3).astype(np.float32).mean(0)
            self.eyes.append(dict(xs=xs, yu=yu, yl=yl, h=h, y0=y0,
                                  y1=int(np.ceil(yl.max())) + 4, skin=skin))
        # mouth: split line between the teeth rows, opening profile, jaw region
        up, lo = tf(_LIP_IN_UP), tf(_LIP_IN_LO)
        up, lo = up[np.argsort(up[:, 0])], lo[np.argsort(lo[:, 0])]
        self.mx0, self.mx1 = up[0, 0], up[-1, 0]
        chin_y = tf([_CHIN])[0, 1]
        xc, hw = (self.mx0 + self.mx1) / 2, (self.mx1 - self.mx0) / 2
        bx0, bx1 = int(xc - 2.2 * hw), int(xc + 2.2 * hw)
        xs = np.arange(bx0, bx1, dtype=np.float64)
        ys = (np.interp(xs, up[:, 0], up[:, 1]) + np.interp(xs, lo[:, 0], lo[:, 1])) / 2
        u = np.clip((xs - xc) / hw, -1, 1)
        # gap shape between the corners
        self.lens = (1 - u ** 2) ** 0.6
        # jaw drop profile
        self.jaw = np.cos(0.5 * np.pi * np.clip((xs - xc) / (2.2 * hw), -1, 1)) ** 2
        self.m_x0, self.m_ys = bx0, ys
        # hide the photo's lower teeth once: the lower lip is stretched up to the split line (rows
        # [ys, lo + T] take the photo rows [lo, lo + T], T = 12 photo px). With lower teeth between
        # the lips FaceMesh's inner lower-lip landmarks jump between teeth and lip; upper teeth
        # stay.
        yin_lo = np.maximum(np.interp(xs, lo[:, 0], lo[:, 1]), ys)
        bot = yin_lo + 12 * s
        yy = np.arange(int(ys.min()) - 1, int(bot.max()) + 2, dtype=np.float64)[:, None]
        src = np.where((yy >= ys) & (yy <= bot), bot - (bot - yy) * (bot - yin_lo) / (bot - ys), yy)
        rows = slice(int(yy[0, 0]), int(yy[-1, 0]) + 1)
        self.canvas[rows, bx0:bx1] = cv2.remap(
            self.canvas, np.broadcast_to(xs[None, :], src.shape).astype(np.float32),
            src.astype(np.float32), cv2.INTER_LINEAR)
        self.m_xc, self.m_hw = xc, hw
        self.m_y0 = int(ys.min() - 45 - 1.3 * style.mouth_px) - 2
        # rows moving fully with the jaw
        self.m_drop = chin_y - ys.min() + 10
        # then easing to rest over this
        self.m_fall = 110.0
        self.m_y1 = int(ys.max() + self.m_drop + self.m_fall + style.mouth_px + 4)
        # depth relief (units of the camera distance, < 0 = towards the camera): a rounded face
        # (a cap over the face oval, flat at its rim) plus a nose ridge
        yy, xx = np.mgrid[0:CANVAS_H, 0:CANVAS_W].astype(np.float64)
        half_w = 1.15 * np.linalg.norm(tf([_FACE_L])[0] - tf([_FACE_R])[0]) / 2
        half_h = 1.45 * abs(tf([_CHIN])[0, 1] - tf([_FOREHEAD])[0, 1]) / 2
        # round across, nearly flat from brow to chin (4th power), as a face is
        r2 = ((xx - CANVAS_W / 2) / half_w) ** 2 + ((yy - CANVAS_H / 2) / half_h) ** 4
        cap = 0.65 * half_w * np.clip(1 - r2, 0, None) ** 1.5
        # nose: protrudes more and more from the bridge down to the tip, then cuts back sharply
        # above the upper lip (a Gaussian tail there would tilt the lips and fake mouth motion)
        (bx, by), (nx, ny) = tf([_NOSE_BRIDGE])[0], tf([_NOSE_TIP])[0]
        # 0 at the bridge, 1 at the tip
        v = (yy - by) / (ny - by)
        along = np.where(v < 0, np.exp(-0.5 * (v * (ny - by) / (6 * s)) ** 2),
                         np.where(v <= 1, 0.3 + 0.7 * v,
                                  np.exp(-0.5 * ((yy - ny) / (2.0 * s)) ** 2)))
        along = np.where(v < 0, 0.3 * along, along)
        across = np.exp(-0.5 * ((xx - (bx + (nx - bx) * np.clip(v, 0, 1))) / (6 * s)) ** 2)
        ridge = 0.30 * half_w * along * across
        self.depth = (-(cap + ridge) / FOCAL_PX).astype(np.float32)

    # ------------------------------------------------------------------------------------- mouth
    def _mouth(self, img: np.ndarray, depth: np.ndarray, a: float) -> None:
        """Open the mouth by ``a`` canvas pixels (in place); the depth relief moves with the jaw.

        The lips part along the split line: the upper lip rises by 0.2 a, the lower lip and the jaw
        drop by 0.8 a (both x the lens profile, 0 at the corners), and the corners move in by up to
        0.15 a (an open singing mouth is narrower than a smile). One backward map does it all; the
        gap between the lips is painted as the mouth interior.
        """
        if a < 0.05:
            return
        cv2 = self.cv2
        a_up, a_lo = 0.2 * a, 0.8 * a
        y = np.arange(self.m_y0, self.m_y1, dtype=np.float64)[:, None]
        x = np.arange(len(self.m_ys), dtype=np.float64)[None, :] + self.m_x0
        xs = x[0]
        # corners in: source columns come from further out, near the mouth's rows only
        yc = self.m_ys.mean() + 0.3 * a
        env_y = np.cos(0.5 * np.pi * np.clip(np.abs(y - yc) / (45 + a), 0, 1)) ** 2
        u2 = np.clip((x - self.m_xc) / (2 * self.m_hw), -1, 1)
        src_x = x + 0.15 * a * np.sin(np.pi * u2) * env_y
        split = np.interp(src_x, xs, self.m_ys)
        lens = np.interp(src_x, xs, self.lens)
        jaw = np.interp(src_x, xs, self.jaw)
        # inner lip lines in the frame
        top, bottom = split - a_up * lens, split + a_lo * lens
        # >= 0 above / below the gap
        above, dist = top - y, y - bottom
        # upper lip + philtrum stretch
        w_up = np.cos(0.5 * np.pi * np.clip(above / 40.0, 0, 1)) ** 2
        m = np.clip(dist / 30.0, 0, 1)                                   # lip -> jaw profile blend
        v = np.where(dist < self.m_drop, 1.0,
                     np.cos(0.5 * np.pi * np.clip((dist - self.m_drop) / self.m_fall, 0, 1)) ** 2)
        src_y = np.where(y <= top, y + a_up * lens * w_up,
                         np.where(y >= bottom, y - a_lo * (lens * (1 - m) + jaw * m) * v, split))
        src_x, src_y = src_x.astype(np.float32), src_y.astype(np.float32)
        region = cv2.remap(img, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        box = (slice(self.m_y0, self.m_y1), slice(self.m_x0, self.m_x0 + len(self.m_ys)))
        depth[box] = cv2.remap(self.depth, src_x, src_y, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        # mouth interior (anti-aliased): dark, a little redder towards the bottom (tongue)
        inside = np.clip(np.minimum(np.minimum(y - top + 0.5, bottom - y + 0.5),
                                    bottom - top), 0, 1)
        t = np.clip((y - top) / np.maximum(bottom - top, 1e-3), 0, 1)
        colour = np.stack([38 + 40 * t ** 2, 14 + 6 * t, 18 + 8 * t], -1)
        alpha = inside[..., None]
        region = region * (1 - alpha) + colour * alpha
        img[box] = np.clip(region + 0.5, 0, 255).astype(np.uint8)

    # -------------------------------------------------------------------------------------- eyes
    def _eyelids(self, img: np.ndarray, closure: float) -> None:
        """Lower the upper eyelids to ``closure`` (0 open .. 1 shut) of the eye height (in
        place)."""
        if closure < 0.02:
            return
        cv2 = self.cv2
        for e in self.eyes:
            xs, yu, yl = e["xs"], e["yu"], e["yl"]
            edge = yu + closure * (yl - yu + 1.5)                       # lid margin position
            # cover the old lash line too
            top = yu - 3.0 * min(1.0, 4 * closure)
            y0, y1, x0 = e["y0"], e["y1"], int(xs[0])
            yy = np.arange(y0, y1, dtype=np.float64)[:, None]
            lid = np.clip(edge[None, :] - yy + 0.5, 0, 1) * np.clip(yy - top[None, :] + 1.5, 0, 1)
            lid = cv2.GaussianBlur(lid.astype(np.float32), (0, 0), 0.8)[..., None]
            # darker at margin
            shade = np.clip(1 - (edge[None, :] - yy) / (e["h"] + 2), 0, 1)[..., None]
            colour = e["skin"] * (1 - 0.12 * shade)
            lash = (np.exp(-0.5 * ((yy - edge[None, :]) / 0.9) ** 2)[..., None]
                    * min(1.0, 3 * closure))
            patch = img[y0:y1, x0:x0 + len(xs)].astype(np.float32)
            patch = patch * (1 - lid) + colour * lid
            patch = patch * (1 - 0.75 * lash) + np.array([45, 30, 28], np.float32) * 0.75 * lash
            img[y0:y1, x0:x0 + len(xs)] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)

    # -------------------------------------------------------------------------------------- pose
    def _rotation(self, pose):
        pitch, yaw, roll = [float(v) for v in pose[:3]]
        cx, sx, cy, sy, cz, sz = (np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw),
                                  np.cos(roll), np.sin(roll))
        Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        T = np.array([(FACE_OUT[0] - FRAME_W / 2) / FOCAL_PX + pose[3],
                      (FACE_OUT[1] - FRAME_H / 2) / FOCAL_PX + pose[4], 1 + pose[5]])
        return Rz @ Ry @ Rx, T

    def homography(self, pose: np.ndarray) -> np.ndarray:
        """3x3 map canvas -> frame of the face *plane* (depth 0) for pose (pitch, yaw, roll, tx, ty,
        tz)."""
        R, T = self._rotation(pose)
        f = FOCAL_PX
        K = np.array([[f, 0, FRAME_W / 2], [0, f, FRAME_H / 2], [0, 0, 1]])
        plane = np.array([[1 / f, 0, -CANVAS_W / 2 / f], [0, 1 / f, -CANVAS_H / 2 / f], [0, 0, 1]])
        return K @ np.column_stack([R[:, 0], R[:, 1], T]) @ plane

    def pose_map(self, pose: np.ndarray,
                 depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Backward map frame pixel -> canvas pixel for ``pose``, with the face's depth relief.

        Canvas pixel p is the head point X(p) = ((p - c) (1 + z) / f + t0 z, z) with z =
        ``self.depth`` and t0 the rest offset of the face centre from the optical axis (so the rest
        pose reproduces the canvas exactly); the frame shows K (R X + T). The inverse is
        found by the fixed-point iteration p = G^-1(q) - parallax(p), G the plane homography, on a
        4x coarser grid (cell centres chosen so cv2.resize upsamples it exactly), then upsampled.
        """
        cv2, f, step = self.cv2, FOCAL_PX, 4
        depth = self.depth if depth is None else depth
        R, T = self._rotation(pose)
        G = self.homography(pose)
        Gi = np.linalg.inv(G)
        qx, qy = np.meshgrid(step * (np.arange(FRAME_W // step) + 0.5) - 0.5,
                             step * (np.arange(FRAME_H // step) + 0.5) - 0.5)

        def apply(M, x, y):
            return ((M[0, 0] * x + M[0, 1] * y + M[0, 2]) / (M[2, 0] * x + M[2, 1] * y + M[2, 2]),
                    (M[1, 0] * x + M[1, 1] * y + M[1, 2]) / (M[2, 0] * x + M[2, 1] * y + M[2, 2]))

        px0, py0 = apply(Gi, qx, qy)
        px, py = px0, py0
        t0x, t0y = (FACE_OUT[0] - FRAME_W / 2) / f, (FACE_OUT[1] - FRAME_H / 2) / f   # rest offset
        for _ in range(4):
            z = cv2.remap(depth, px.astype(np.float32), py.astype(np.float32), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0).astype(np.float64)
            X = (px - CANVAS_W / 2) * (1 + z) / f + t0x * z
            Y = (py - CANVAS_H / 2) * (1 + z) / f + t0y * z
            Xc = R[0, 0] * X + R[0, 1] * Y + R[0, 2] * z + T[0]
            Yc = R[1, 0] * X + R[1, 1] * Y + R[1, 2] * z + T[1]
            Zc = R[2, 0] * X + R[2, 1] * Y + R[2, 2] * z + T[2]
            # where p really lands
            ex, ey = apply(Gi, f * Xc / Zc + FRAME_W / 2, f * Yc / Zc + FRAME_H / 2)
            px, py = px0 - (ex - px), py0 - (ey - py)
        size = (FRAME_W, FRAME_H)
        return (cv2.resize(px.astype(np.float32), size, interpolation=cv2.INTER_LINEAR),
                cv2.resize(py.astype(np.float32), size, interpolation=cv2.INTER_LINEAR))

    def render(self, pose: np.ndarray, mouth_open: float, eye_closure: float) -> np.ndarray:
        """One RGB frame (FRAME_H, FRAME_W, 3) uint8."""
        img, depth = self.canvas.copy(), self.depth.copy()
        self._mouth(img, depth, float(mouth_open) * self.style.mouth_px)
        self._eyelids(img, float(eye_closure))
        mx, my = self.pose_map(pose, depth)
        return self.cv2.remap(img, mx, my, self.cv2.INTER_LINEAR,
                              borderMode=self.cv2.BORDER_REFLECT101)


# ===================================================================================== camera + mp4
def camera_audio(mix: np.ndarray, delay_samples: int, n_samples: int, rng) -> np.ndarray:
    """What the camera's microphone records at CAM_SR: the song, played ``delay_samples`` after the
    camera started, through a small room (direct sound + exponentially decaying reverb tail),
    with a gain and some room noise. The direct path has zero delay, so the song's position in
    the recording is exactly ``delay_samples``."""
    from scipy import signal

    x = signal.resample_poly(mix.astype(np.float64), CAM_SR // 300, SONG_SR // 300)   # 44.1k -> 48k
    y = np.zeros(n_samples)
    m = min(len(x), n_samples - delay_samples)
    y[delay_samples:delay_samples + m] = x[:m]
    rt60 = rng.uniform(0.2, 0.4)
    t = np.arange(int(rt60 * CAM_SR)) / CAM_SR
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * 0.04
    # first reflections after 4 ms
    ir[: int(0.004 * CAM_SR)] = 0
    ir[0] = 1.0
    y = signal.fftconvolve(y, ir)[:n_samples]
    # brownish hum/room
    noise = signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(n_samples))
    y = rng.uniform(0.35, 0.7) * y + 10 ** (-48 / 20) * noise / np.std(noise)
    return np.clip(y, -1, 1).astype(np.float32)


def write_take_video(path: Path, renderer: FaceRenderer, truth: dict,
                     audio: np.ndarray, desc: str) -> None:
    """H.264 (yuv420p, CRF 18, one encoder thread for byte-identical output) + AAC mono 48 kHz
    mp4."""
    from fractions import Fraction

    import av
    from tqdm import tqdm

    n = len(truth["pose"])
    per_frame = CAM_SR // FPS
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as box:
            vs = box.add_stream("libx264", rate=FPS)
            vs.width, vs.height, vs.pix_fmt = FRAME_W, FRAME_H, "yuv420p"
            vs.codec_context.thread_count = 1
            vs.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
            as_ = box.add_stream("aac", rate=CAM_SR, layout="mono")
            as_.bit_rate = 128000
            for i in tqdm(range(n), desc=desc, unit="frame", leave=False, mininterval=2):
                rgb = renderer.render(truth["pose"][i], truth["mouth_open"][i],
                                      truth["eye_closure"][i])
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                box.mux(vs.encode(frame))
                chunk = av.AudioFrame.from_ndarray(audio[None, i * per_frame:(i + 1) * per_frame],
                                                   format="flt", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = (CAM_SR, i * per_frame,
                                                                 Fraction(1, CAM_SR))
                box.mux(as_.encode(chunk))
            box.mux(vs.encode(None))
            box.mux(as_.encode(None))


def generate(out, subjects: int = 2, songs: int = 2, seconds: float = 30, seed: int = 0) -> Path:
    """Write the demo recordings (songs, stems, videos, truth, samples.tsv) into ``out``; return
    it."""
    out = Path(out)
    if subjects < 1 or songs < 1:
        raise ValueError("demo: subjects and songs must be at least 1")
    if seconds < 6:
        raise ValueError(f"demo: seconds must be at least 6 (got {seconds})")
    sheet = out / "samples.tsv"
    sheet.unlink(missing_ok=True)                                 # incomplete until rewritten last
    rendered = {}
    for j in range(1, songs + 1):
        song = render_song(seed, j, float(seconds))
        base = out / "songs" / f"song{j}"
        write_wav(base.with_suffix(".wav"), song.mix, song.sr)
        write_wav(out / "songs" / f"song{j}.stems" / "vocals.wav", song.vocals, song.sr)
        write_wav(out / "songs" / f"song{j}.stems" / "music.wav", song.music, song.sr)
        save_npz(out / "songs" / f"song{j}.truth.npz", **song_truth(song))
        rendered[j] = song
    for i in range(1, subjects + 1):
        style = subject_style(seed, i)
        renderer = FaceRenderer(style)
        for j, song in rendered.items():
            take = f"singer{i}_song{j}"
            rng = _rng(seed, 6, i, j)
            delay_n = int(round(rng.uniform(*DELAY_RANGE) * CAM_SR))
            delay = delay_n / CAM_SR
            n = int(round((delay + song.seconds + rng.uniform(0.4, 0.6)) * FPS))
            truth = take_truth(song, style, seed, delay, n)
            audio = camera_audio(song.mix, delay_n, n * (CAM_SR // FPS), rng)
            write_take_video(out / f"singer{i}" / f"{take}.mp4", renderer, truth, audio, take)
            # the video was rendered from the OpenCV-axes pose; the truth file holds the dataset's
            save_npz(out / f"singer{i}" / f"{take}.truth.npz",
                     **{**truth, "pose": dataset_pose(truth["pose"])})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["take", "subject", "video", "song"], delimiter="\t",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(demo_rows(subjects, songs))
    with atomic_path(sheet) as tmp:
        tmp.write_text(buf.getvalue())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m preprocessing.demo",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--subjects", type=int, default=2, help="number of singers (default 2)")
    ap.add_argument("--songs", type=int, default=2, help="number of songs (default 2)")
    ap.add_argument("--seconds", type=float, default=30,
                    help="length of each song in s (default 30)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a = ap.parse_args(argv)
    try:
        generate(a.out, a.subjects, a.songs, a.seconds, a.seed)
    except ValueError as e:
        print(f"musicface: {e}", file=sys.stderr)
        return 2
    print(f"demo: {a.subjects} singers x {a.songs} songs x {a.seconds:g} s written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
