"""Faces: face parsing (BiSeNet), used to turn photos into skin-masked faces."""
