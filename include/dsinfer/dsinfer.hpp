// dsinfer — the public C++ API (umbrella header): models, tokenizers, chat encoding, samplers, sessions and the
// batching engine, constrained decoding, the OpenAI protocol layer, errors, the log and the version.
// Link libdsinfer (CMake: find_package(dsinfer CONFIG) and dsinfer::dsinfer; pkg-config: dsinfer).
#pragma once
// (Every public header includes dsinfer/export.hpp, which stops a pre-C++20 build with a clear #error.)

#include "dsinfer/chat.hpp"
#include "dsinfer/constraint.hpp"
#include "dsinfer/error.hpp"
#include "dsinfer/log.hpp"
#include "dsinfer/model.hpp"
#include "dsinfer/openai.hpp"
#include "dsinfer/sampler.hpp"
#include "dsinfer/session.hpp"
#include "dsinfer/tokenizer.hpp"
#include "dsinfer/version.hpp"
