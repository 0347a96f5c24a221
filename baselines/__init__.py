"""Conventional codecs (JPEG, WebP, MP3, Opus) to compare DANCE codecs with."""
