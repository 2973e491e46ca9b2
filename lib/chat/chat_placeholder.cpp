// Placeholder until the chat encoder lands.
