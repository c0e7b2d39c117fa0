//! A scripted libnvidia-ml.so for the GPU tests (being written).
