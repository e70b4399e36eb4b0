export interface User {
  id: number;
  name: string;
}

type Id = number;

export class UserRepo {
  private users = new Map<Id, User>();

  add(user: User): void {
    this.users.set(user.id, user);
  }

  find(id: Id): User | undefined {
    return this.users.get(id);
  }
}

export const byName = (users: User[], name: string): User[] =>
  users.filter((u) => u.name === name);
