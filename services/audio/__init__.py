"""Speech to text and text to speech, the compute core of the audio worker.

decode (uploads -> samples), stt + stt_pocketsphinx / stt_whisper (recognisers), subtitles
(response formats), tts + tts_espeak / tts_vits (speech engines), voices, encode (streamed files).
"""
