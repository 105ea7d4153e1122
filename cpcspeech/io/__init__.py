"""Reading and writing: audio, audio sources, Kaldi files, alignments, feature writers, shards.

Imports the foundation and the model (for frame geometry), nothing above.
"""
