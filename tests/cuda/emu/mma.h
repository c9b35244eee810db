// Emulation stub: WMMA bodies are compiled only for __CUDA_ARCH__ >= 800, never here.
#pragma once
