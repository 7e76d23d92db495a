"""Decoding: the sampling math, a base (spec, decoded video, the source of a file), one
module per decoder, the fallback between them, the killable worker and the decode stage."""
