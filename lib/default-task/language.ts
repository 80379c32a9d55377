/**
 * The little language of the embedded default task (no downloads exist at run time, so the project makes its own).
 * Prompts ask about a subject; responses describe it with adjectives. The default oracle prefers responses with
 * more GOOD and fewer BAD adjectives that stay on the prompt's subject; the base policy, pretrained on responses
 * whose adjectives are drawn uniformly from all groups, uses all of them. SPPO should move the policy towards
 * GOOD adjectives, which is what the win rate against the base measures.
 */

export const SUBJECTS = [
  "cat", "dog", "river", "city", "garden", "robot", "book", "storm", "teacher", "friend",
  "forest", "house", "song", "ship", "market", "school", "bird", "mountain", "village", "train",
] as const;

export const GOOD = ["kind", "bright", "helpful", "calm", "gentle", "clear", "warm", "honest", "brave", "lovely"] as const;
export const BAD = ["rude", "dull", "broken", "noisy", "cold", "vague", "angry", "ugly", "lazy", "grim"] as const;
export const NEUTRAL = ["big", "small", "old", "new", "tall", "round", "quiet", "fast", "green", "long"] as const;

/** Three adjective groups in a preference cycle, for the intransitive demo: each beats the next (rock-paper-scissors). */
export const CYCLE = [GOOD, NEUTRAL, BAD] as const;

export const PROMPT_TEMPLATES = [
  "tell me about the {s}.",
  "describe the {s}.",
  "what is the {s} like?",
  "write about the {s}.",
  "say something about the {s}.",
] as const;

export const RESPONSE_TEMPLATES = [
  "the {s} is {a} and {b}.",
  "it is a {a} {s}.",
  "i think the {s} is {a}.",
  "the {s} looks {a} , {b} and {c}.",
  "a {a} , {b} {s}.",
  "this {s} is very {a}.",
] as const;

export const ALL_ADJECTIVES: readonly string[] = [...GOOD, ...BAD, ...NEUTRAL];
