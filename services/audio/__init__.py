"""Speech to text and text to speech: the audio worker and its compute core.

server (the gRPC surface) and params (request rules, shared with the router) over: decode
(uploads -> samples), stt + stt_faster_whisper / stt_pocketsphinx / stt_whisper (recognisers),
subtitles (response formats), tts + tts_piper (with phonemes) / tts_espeak / tts_vits (speech
engines), voices, encode (streamed files), and engines (which engine a catalog entry names,
loaded from its weights).
"""
