// Who is in a quiz room, and who hosts it: the one place that keeps the
// player list. Pure state (no DOM, no network, no clock), changed only by
// the room's messages in stream order, so every page that saw the same
// messages holds the same roster.
//
// The roster is fed by the room's own `join`/`leave` messages and a
// snapshot from another player; who is really connected comes from the
// server's presence (quiz.js: `presence: true`, `client.presence()`), and a
// player whose streams are all gone is declared gone with a `leave`.

/** Players in join order (the first is the most senior), plus the host. */
export class Roster {
  #players = new Map(); // id -> {id, name}, in join order
  /** The host's player id, or null. At most one per room. */
  host = null;

  /** Players in join order. */
  get list() {
    return [...this.#players.values()];
  }

  get size() {
    return this.#players.size;
  }

  has(id) {
    return this.#players.has(id);
  }

  get(id) {
    return this.#players.get(id);
  }

  /**
   * Adds a player (a second add of the same id only renames). With
   * `wantsHost`, the player becomes the host if the room has none.
   * Returns `{added, host}`: `host` is `"granted"`, `"taken"` (someone else
   * hosts) or null (not asked).
   */
  add({ id, name }, { wantsHost = false } = {}) {
    const added = !this.#players.has(id);
    this.#players.set(id, { id, name });
    let host = null;
    if (wantsHost) host = this.claim(id) || this.host === id ? "granted" : "taken";
    return { added, host };
  }

  /**
   * Removes a player. When the host leaves, hosting passes to the most
   * senior player left. Returns `{removed, newHost}` (`newHost` is the new
   * host's id when hosting changed hands, else null).
   */
  remove(id) {
    const removed = this.#players.delete(id);
    let newHost = null;
    if (removed && this.host === id) {
      this.host = this.#players.keys().next().value ?? null;
      newHost = this.host;
    }
    return { removed, newHost };
  }

  /** Makes `id` the host if the room has none and `id` is in it. */
  claim(id) {
    if (this.host !== null || !this.#players.has(id)) return false;
    this.host = id;
    return true;
  }

  /**
   * Who answers a newcomer's request for the room's state, in order: the
   * host first, then the others by seniority, never the newcomer.
   */
  responders(newcomer) {
    const others = this.list.map((p) => p.id).filter((id) => id !== newcomer);
    return this.host !== null && others.includes(this.host) ? [this.host, ...others.filter((id) => id !== this.host)] : others;
  }

  toJSON() {
    return { players: this.list, host: this.host };
  }

  static from(json) {
    const roster = new Roster();
    for (const player of json.players) roster.#players.set(player.id, { id: player.id, name: player.name });
    roster.host = json.host;
    return roster;
  }
}
