"""A training term that keeps where sounds come from: the phase of every mic pair's cross-spectrum.

Perception reads a sound's direction from the delays between microphones (GCC-PHAT,
evaluation/direction.py), i.e. from the *phase* of each pair's cross-power spectrum, with every
frequency weighted alike. A waveform loss leaves those phases free wherever the codec spends few
bits, and a decoder's shared artefact (the same ripple on every channel) pulls every delay to
zero. This term compares the unit cross-spectra of output and reference per STFT bin:
1 − cos(phase difference), averaged over the bins that carry energy in the reference (a soft
mask −40 dB below each pair's strongest bin) within the band the metric scores.
"""
from __future__ import annotations

import torch

from .align import BAND_HZ

N_FFT = 1024
FLOOR = 1e-4                 # bins 40 dB below a pair's strongest count for little


def cross_phase_loss(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int,
                     n_fft: int = N_FFT, band: tuple[float, float] = BAND_HZ) -> torch.Tensor:
    """Mean over examples and mic pairs of the energy-masked phase error (0 = phases kept,
    ~1 = unrelated), for linear-domain signals B×C×T with C >= 2."""
    batch, channels, frames = reference.shape
    n_fft = min(n_fft, frames)
    window = torch.hann_window(n_fft, device=reference.device)

    def spectra(x: torch.Tensor) -> torch.Tensor:
        s = torch.stft(x.reshape(-1, frames), n_fft, n_fft // 2, window=window,
                       return_complex=True)
        return s.reshape(batch, channels, *s.shape[1:])            # B×C×F×N

    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate, device=reference.device)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    ref, est = spectra(reference.float())[:, :, keep], spectra(estimate.float())[:, :, keep]
    i, j = torch.triu_indices(channels, channels, 1, device=reference.device)
    cross_ref = ref[:, i] * ref[:, j].conj()                        # B×P×F×N
    cross_est = est[:, i] * est[:, j].conj()
    magnitude = cross_ref.abs()
    scale = magnitude.flatten(2).amax(2)[..., None, None].clamp_min(1e-30)
    weight = magnitude / (magnitude + FLOOR * scale)
    # the estimate's unit vector, softened near zero so that silence has a finite gradient
    unit_est = cross_est / torch.sqrt(cross_est.abs() ** 2 + (FLOOR * scale) ** 2)
    unit_ref = cross_ref / magnitude.clamp_min(1e-30)
    agreement = (unit_est * unit_ref.conj()).real
    error = ((1 - agreement) * weight).flatten(2).sum(2) / weight.flatten(2).sum(2).clamp_min(1e-12)
    return error.mean()
