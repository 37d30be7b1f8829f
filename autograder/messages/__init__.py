"""The explanations of known mistakes, per chapter: texts the public checks may use."""
