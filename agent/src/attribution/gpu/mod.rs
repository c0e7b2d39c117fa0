//! GPU use per pod, from NVML. (Being written.)
