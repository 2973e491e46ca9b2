// dsinfer — the public C++ API (umbrella header).
#pragma once
#include "dsinfer/error.hpp"
#include "dsinfer/model.hpp"
