"""What an index is made of: the build kinds and their pure maths (CUR, anchor selection),
and the per-item score rows every kind writes."""
