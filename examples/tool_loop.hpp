// The tool-calling loop an application runs around a Session: generate; while the reply calls tools, run them, add
// the assistant turn and the results to the conversation, and continue. Used by examples/chat_with_tools.cpp and by
// tests/examples/test_tool_loop.cpp (which scripts the model's output).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dsinfer/constraint.hpp"
#include "dsinfer/session.hpp"

namespace example {

// A tool: JSON arguments in, result text out.
using ToolFn = std::function<std::string(const std::string& arguments_json)>;

// Runs one user turn to its final answer. `conversation` holds everything so far (system with tools, users, ...);
// on return it also holds the assistant turns and tool results of this turn. Returns the final assistant message.
// The tools declared on the first message are held to, as OpenAI's tool_choice "auto" is served: the model may
// answer or call, and a call it makes parses and names a declared tool with arguments that follow its schema.
inline dsinfer::ChatMessage run_turn(dsinfer::Session& session, const dsinfer::Tokenizer& tokenizer,
                                     std::vector<dsinfer::ChatMessage>& conversation,
                                     const std::map<std::string, ToolFn>& tools, int max_rounds = 8,
                                     const std::function<void(const dsinfer::ChatEvent&)>& on_event = {}) {
  dsinfer::GenerateParams gen;
  gen.max_tokens = 512;
  if (!conversation.empty() && !conversation.front().tools_json.empty())
    gen.constraint = dsinfer::Constraint::compile(
        tokenizer, dsinfer::constraint_from_request("", conversation.front().tools_json, "\"auto\""));
  for (int round = 0; round < max_rounds; ++round) {
    // Only the part of the conversation the cache does not hold yet is evaluated.
    session.set_messages(conversation);
    session.generate(gen, [&](const dsinfer::ChatEvent& e) {
      if (on_event) on_event(e);
      return true;
    });
    dsinfer::ChatMessage reply = session.reply();
    conversation.push_back(reply);
    if (reply.tool_calls.empty()) return reply;
    for (size_t i = 0; i < reply.tool_calls.size(); ++i) {
      const auto& call = reply.tool_calls[i];
      dsinfer::ChatMessage result;
      result.role = "tool";
      result.tool_call_id = call.id;
      auto it = tools.find(call.name);
      result.content = it == tools.end() ? "error: unknown tool " + call.name : it->second(call.arguments);
      conversation.push_back(result);
    }
  }
  throw dsinfer::Error(dsinfer::ErrorCode::Internal, "the model kept calling tools");
}

}  // namespace example
