"""cheroot's README example, with the import changed to stogie."""

from stogie import wsgi


def my_crazy_app(environ, start_response):
    status = '200 OK'
    response_headers = [('Content-type', 'text/plain')]
    start_response(status, response_headers)
    return [b'Hello world!']


addr = '127.0.0.1', 8070  # cheroot's example binds 0.0.0.0; loopback here
server = wsgi.Server(addr, my_crazy_app)

if __name__ == '__main__':
    server.start()
