// The state of one quiz room as a pure state machine: `apply(type, data)`
// for each room message in stream order, `toJSON()`/`QuizRoom.from()` for
// the snapshot a newcomer gets. No DOM, no network, no clock: every page
// that applies the same messages holds the same room (players, host,
// question, answers, scores), which is what makes a snapshot from any of
// them good for a newcomer.
//
// Messages (topics `quiz:<room>:players|game|answers`):
//   join     {id, name, host, nonce}   a player enters (host: wants to host)
//   leave    {id, reason?}             a player goes (or is found gone)
//   host     {id}                      a player takes the free host seat
//   question {by, round, n, total, text, choices, reveal}   from the host
//   finish   {by, round, reveal}       from the host: the final scores
//   answer   {round, n, player, choice}
// Game messages count only from the current host, so one host drives the
// room even if an old host's click arrives late.
import { Roster } from "./roster.js";

/** One room's players and game. */
export class QuizRoom {
  roster = new Roster();
  /** Game number: 1 for the first game, +1 for each "play again". */
  round = 0;
  /** `lobby`, `question` or `finished`. */
  phase = "lobby";
  /** The question on screen: `{n, total, text, choices}`, or null. */
  question = null;
  /** Answers to the question on screen: player id -> choice. */
  answers = new Map();
  /** Points this round: player id -> points. */
  scores = new Map();
  /** Everyone who played this round, also after leaving: id -> name. */
  played = new Map();
  /** Highest question number whose answer was revealed this round. */
  revealed = 0;
  /** The final ranking, fixed when the host finishes the round, or null. */
  final = null;

  get players() {
    return this.roster.list;
  }

  get host() {
    return this.roster.host;
  }

  nameOf(id) {
    return this.roster.get(id)?.name ?? this.played.get(id) ?? "someone";
  }

  hasAnswered(id) {
    return this.phase === "question" && this.answers.has(id);
  }

  /**
   * Applies one message; returns what happened as notes for the activity
   * log, `[{kind, text, about?}]` (`about`: the player a note is about).
   * Unknown, stale or unauthorised messages change nothing.
   */
  apply(type, data) {
    const notes = [];
    const note = (kind, text, about) => notes.push({ kind, text, about });
    switch (type) {
      case "join": {
        const { added, host } = this.roster.add({ id: data.id, name: data.name }, { wantsHost: Boolean(data.host) });
        if (added) note("join", `${data.name} joined`, data.id);
        if (added && this.phase !== "lobby") this.played.set(data.id, data.name);
        if (host === "granted" && added) note("host", `${data.name} hosts the room`, data.id);
        if (host === "taken") note("host-taken", `${data.name} asked to host, but ${this.nameOf(this.host)} already hosts`, data.id);
        break;
      }
      case "leave": {
        const name = this.nameOf(data.id);
        const { removed, newHost } = this.roster.remove(data.id);
        if (!removed) break;
        note("leave", data.reason ? `${name} left (${data.reason})` : `${name} left`, data.id);
        if (newHost !== null) note("host", `${this.nameOf(newHost)} hosts the room now`, newHost);
        break;
      }
      case "host":
        if (this.roster.claim(data.id)) note("host", `${this.nameOf(data.id)} hosts the room`, data.id);
        break;
      case "question": {
        if (data.by !== this.host) break;
        if (data.n === 1 && data.round > this.round) this.#newRound(data.round);
        if (data.round !== this.round || data.n <= (this.question?.n ?? 0)) break;
        this.#reveal(data.reveal, notes);
        const { n, total, text, choices } = data;
        this.question = { n, total, text, choices };
        this.answers = new Map();
        this.phase = "question";
        note("question", n === 1 && this.round > 1 ? `Game ${this.round}: question 1 of ${total}` : `Question ${n} of ${total}`);
        break;
      }
      case "finish": {
        if (data.by !== this.host || data.round !== this.round || this.phase !== "question") break;
        this.#reveal(data.reveal, notes);
        this.phase = "finished";
        this.question = null;
        this.answers = new Map();
        this.final = this.ranking();
        note("finish", "The quiz is over");
        break;
      }
      case "answer": {
        const current = this.phase === "question" && data.round === this.round && data.n === this.question.n;
        if (!current || this.answers.has(data.player) || !this.roster.has(data.player)) break;
        this.answers.set(data.player, data.choice);
        this.played.set(data.player, this.nameOf(data.player));
        note("answer", `${this.nameOf(data.player)} answered`, data.player);
        break;
      }
    }
    return notes;
  }

  /**
   * Everyone who played this round and everyone here, best first (ties by
   * name): `[{id, name, score, rank}]`; equal scores share a rank.
   */
  ranking() {
    const ids = new Set([...this.played.keys(), ...this.roster.list.map((p) => p.id)]);
    const rows = [...ids].map((id) => ({ id, name: this.nameOf(id), score: this.scores.get(id) ?? 0 }));
    rows.sort((a, b) => b.score - a.score || a.name.localeCompare(b.name));
    for (const row of rows) row.rank = 1 + rows.filter((other) => other.score > row.score).length;
    return rows;
  }

  #newRound(round) {
    this.round = round;
    this.question = null;
    this.answers = new Map();
    this.scores = new Map();
    this.played = new Map(this.roster.list.map((p) => [p.id, p.name]));
    this.revealed = 0;
    this.final = null;
  }

  /** Scores the answers to the question on screen once the host reveals it (once). */
  #reveal(result, notes) {
    if (!result || result.n <= this.revealed || result.n !== this.question?.n) return;
    for (const [player, choice] of this.answers) {
      if (choice === result.correct) this.scores.set(player, (this.scores.get(player) ?? 0) + 1);
    }
    this.revealed = result.n;
    notes.push({ kind: "reveal", text: `Answer to question ${result.n}: ${result.answer}` });
  }

  toJSON() {
    return {
      roster: this.roster.toJSON(),
      round: this.round,
      phase: this.phase,
      question: this.question,
      answers: [...this.answers],
      scores: [...this.scores],
      played: [...this.played],
      revealed: this.revealed,
      final: this.final,
    };
  }

  static from(json) {
    const room = new QuizRoom();
    room.roster = Roster.from(json.roster);
    room.round = json.round;
    room.phase = json.phase;
    room.question = json.question;
    room.answers = new Map(json.answers);
    room.scores = new Map(json.scores);
    room.played = new Map(json.played);
    room.revealed = json.revealed;
    room.final = json.final;
    return room;
  }
}
