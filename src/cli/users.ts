import { out, program, runOperation, withClient } from './common.js';
import { keyValues } from './format.js';

export function registerUserCommands(): void {
  const cmd = program.command('users').description('the users (claims) of the device');
  cmd
    .command('get', { isDefault: true })
    .description('current users and their services')
    .action(() =>
      withClient(async (c) => {
        const u = await c.call<{ users: string[]; services: string[] }>('users.get');
        out(u, () => keyValues({ users: u.users.join(', ') || '(none)', services: u.services.join(', ') || '(none)' }));
      }),
    );
  cmd
    .command('set [claims...]')
    .description('switch to these claims (none: no users)')
    .action((claims: string[]) => withClient((c) => runOperation(c, 'users.set', { users: claims })));
}
