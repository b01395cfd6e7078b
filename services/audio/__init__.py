"""Speech to text and text to speech: decoding uploads, recognisers, voices, encoders, subtitles."""
